"""subflow_series.delivered_mbps: per-path delivered (ACKed or SACKed) rate, TimeSeries.delivered_mbps

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 19:20:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subflow_series', schema=None) as batch_op:
        batch_op.add_column(sa.Column('delivered_mbps', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('subflow_series', schema=None) as batch_op:
        batch_op.drop_column('delivered_mbps')
