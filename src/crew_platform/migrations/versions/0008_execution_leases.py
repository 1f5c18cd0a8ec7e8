"""execution leases: which process runs a running execution, and the live processes

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-01 19:32:12.681257
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import crew_platform.db


revision: str = '0008'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('workers',
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('host', sa.String(length=200), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', crew_platform.db.UTCDateTime(), nullable=False),
    sa.Column('heartbeat_at', crew_platform.db.UTCDateTime(), nullable=False),
    sa.Column('expires_at', crew_platform.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workers'))
    )
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_owner', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('leased_at', crew_platform.db.UTCDateTime(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_column('leased_at')
        batch_op.drop_column('lease_owner')

    op.drop_table('workers')
