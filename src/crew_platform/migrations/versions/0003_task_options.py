"""task options: context, output_schema, guardrail; JSON outputs of task runs

Revision ID: 0003_task_options
Revises: 0002
Create Date: 2026-12-02 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003_task_options'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('context', JSON, nullable=True))
        batch_op.add_column(sa.Column('output_schema', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('guardrail', sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column('guardrail_max_retries', sa.Integer(), server_default='2', nullable=False)
        )
    with op.batch_alter_table('task_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('output_json', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('task_runs', schema=None) as batch_op:
        batch_op.drop_column('output_json')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('guardrail_max_retries')
        batch_op.drop_column('guardrail')
        batch_op.drop_column('output_schema')
        batch_op.drop_column('context')
