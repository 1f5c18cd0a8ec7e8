"""durable delegations: a coworker's tool calls and a step's judged answers are stored

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 03:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('tool_calls', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('delegation_iteration', sa.Integer(), server_default='0', nullable=False)
        )
        batch_op.add_column(
            sa.Column('delegation_position', sa.Integer(), server_default='0', nullable=False)
        )
        batch_op.add_column(sa.Column('delegation_call_id', sa.String(length=200), nullable=True))
        batch_op.drop_constraint('uq_tool_calls_turn', type_='unique')
        batch_op.create_unique_constraint(
            'uq_tool_calls_turn',
            ['task_run_id', 'delegation_iteration', 'delegation_position', 'iteration', 'position'],
        )
    with op.batch_alter_table('task_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('answer_log', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('task_runs', schema=None) as batch_op:
        batch_op.drop_column('answer_log')
    # A coworker's calls cannot be told apart from the run's own without these columns.
    op.execute('DELETE FROM tool_calls WHERE delegation_iteration <> 0')
    with op.batch_alter_table('tool_calls', schema=None) as batch_op:
        batch_op.drop_constraint('uq_tool_calls_turn', type_='unique')
        batch_op.create_unique_constraint(
            'uq_tool_calls_turn', ['task_run_id', 'iteration', 'position']
        )
        batch_op.drop_column('delegation_call_id')
        batch_op.drop_column('delegation_position')
        batch_op.drop_column('delegation_iteration')
