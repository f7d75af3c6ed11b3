"""failures as data: each repetition's status, error and over_budget; each subflow's congestion control

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 20:00:00

Repetitions stored before this revision all completed (a failed repetition
was not stored), so existing rows become 'completed'.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('repetitions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=16), nullable=False, server_default='completed'))
        batch_op.add_column(sa.Column('error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('over_budget', sa.Boolean(), nullable=True))
        batch_op.create_index('ix_repetitions_status', ['status'], unique=False)
    with op.batch_alter_table('subflows', schema=None) as batch_op:
        batch_op.add_column(sa.Column('congestion_control', sa.String(length=64), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('subflows', schema=None) as batch_op:
        batch_op.drop_column('congestion_control')
    with op.batch_alter_table('repetitions', schema=None) as batch_op:
        batch_op.drop_index('ix_repetitions_status')
        batch_op.drop_column('over_budget')
        batch_op.drop_column('error')
        batch_op.drop_column('status')
