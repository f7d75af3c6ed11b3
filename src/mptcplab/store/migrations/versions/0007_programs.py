"""repetitions.programs: a command workload's programs (argv, exit code, stdout, last stderr line) per repetition

Revision ID: 0005_programs
Revises: 0004_base
Create Date: 2026-12-01 01:50:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005_programs'
down_revision = '0004_base'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('repetitions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('programs', sa.JSON(), nullable=True))


def downgrade() -> None:
    # a plain DROP COLUMN, not batch mode: on SQLite batch mode copies the table, and dropping the old
    # `repetitions` cascades to every row that references it (measurements, subflows, series)
    op.execute('ALTER TABLE repetitions DROP COLUMN programs')
