"""human input: tasks.human_input, task_runs.feedback, room for `waiting_for_input`

Revision ID: 0004
Revises: 0003_task_options
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003_task_options'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_LENGTH, NEW_LENGTH = 16, 32


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('human_input', sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table('task_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('feedback', sa.Text(), nullable=True))
        batch_op.alter_column(
            'status',
            existing_type=sa.String(length=OLD_LENGTH),
            type_=sa.String(length=NEW_LENGTH),
            existing_nullable=False,
        )
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.alter_column(
            'status',
            existing_type=sa.String(length=OLD_LENGTH),
            type_=sa.String(length=NEW_LENGTH),
            existing_nullable=False,
        )


def downgrade() -> None:
    # The older schema knows neither status: what waits for a person is cancelled, so the
    # columns can be narrowed again.
    op.execute(
        "UPDATE executions SET status = 'cancelled' WHERE status = 'waiting_for_input'"
    )
    op.execute(
        "UPDATE task_runs SET status = 'cancelled' "
        "WHERE status IN ('waiting_for_input', 'changes_requested')"
    )
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.alter_column(
            'status',
            existing_type=sa.String(length=NEW_LENGTH),
            type_=sa.String(length=OLD_LENGTH),
            existing_nullable=False,
        )
    with op.batch_alter_table('task_runs', schema=None) as batch_op:
        batch_op.alter_column(
            'status',
            existing_type=sa.String(length=NEW_LENGTH),
            type_=sa.String(length=OLD_LENGTH),
            existing_nullable=False,
        )
        batch_op.drop_column('feedback')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('human_input')
