"""subflows.endpoint, subflows.endpoints: each path's endpoint flags and which endpoint each of its subflows came from

Revision ID: 0004_pm
Revises: 0003
Create Date: 2026-11-30 22:45:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004_pm'
down_revision = '0004_report'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subflows', schema=None) as batch_op:
        batch_op.add_column(sa.Column('endpoint', sa.String(length=64), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('endpoints', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('subflows', schema=None) as batch_op:
        batch_op.drop_column('endpoints')
        batch_op.drop_column('endpoint')
