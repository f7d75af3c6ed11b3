"""repetitions.baseline_path: the path a best-path baseline repetition ran on alone as plain TCP (NULL: MPTCP)

Revision ID: 0004_base
Revises: 0003
Create Date: 2026-11-30 22:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004_base'
down_revision = '0004_pm'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('repetitions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('baseline_path', sa.String(length=32), nullable=True))


def downgrade() -> None:
    # a plain DROP COLUMN (SQLite >= 3.35, PostgreSQL), not batch mode: on SQLite batch mode copies the table,
    # and dropping the old `repetitions` cascades to every row that references it (measurements, subflows, series)
    op.execute('ALTER TABLE repetitions DROP COLUMN baseline_path')
