"""subflow_series.cwnd (TimeSeries.cwnd) and repetitions.workload_series (Repetition.series)

Revision ID: 0004_report
Revises: 0003
Create Date: 2026-11-30 22:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004_report'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subflow_series', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cwnd', sa.JSON(), nullable=True))
    with op.batch_alter_table('repetitions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('workload_series', sa.JSON(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35, PostgreSQL), not a batch copy: on SQLite a batch recreates the
    # table, and with foreign keys on, dropping the old repetitions table would cascade to every measurement
    op.execute("ALTER TABLE repetitions DROP COLUMN workload_series")
    op.execute("ALTER TABLE subflow_series DROP COLUMN cwnd")
