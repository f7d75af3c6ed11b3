"""initial schema: scenarios, runs, environment, tags, repetitions, measurements, subflows, series

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 08:41:31.260028
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('scenario_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('content', sa.JSON(), nullable=True),
    sa.Column('first_seen', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name', 'content_hash')
    )
    with op.batch_alter_table('scenario_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scenario_versions_name'), ['name'], unique=False)

    op.create_table('runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uid', sa.String(length=32), nullable=False),
    sa.Column('scenario_id', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=False),
    sa.Column('ended_at', sa.Float(), nullable=True),
    sa.Column('kernel', sa.String(length=200), nullable=False),
    sa.Column('scheduler', sa.String(length=64), nullable=False),
    sa.Column('path_manager', sa.String(length=32), nullable=False),
    sa.Column('backend', sa.String(length=32), nullable=False),
    sa.Column('errors', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['scenario_id'], ['scenario_versions.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('uid')
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_runs_kernel'), ['kernel'], unique=False)
        batch_op.create_index(batch_op.f('ix_runs_label'), ['label'], unique=False)
        batch_op.create_index(batch_op.f('ix_runs_scenario_id'), ['scenario_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_runs_started_at'), ['started_at'], unique=False)

    op.create_table('environments',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('kernel_release', sa.String(length=200), nullable=False),
    sa.Column('kernel_version', sa.Text(), nullable=False),
    sa.Column('cmdline', sa.Text(), nullable=False),
    sa.Column('cpu_model', sa.String(length=200), nullable=False),
    sa.Column('cpu_count', sa.Integer(), nullable=True),
    sa.Column('lab_version', sa.String(length=64), nullable=False),
    sa.Column('lab_commit', sa.String(length=64), nullable=False),
    sa.Column('link_backend', sa.String(length=32), nullable=False),
    sa.Column('load_before', sa.JSON(), nullable=True),
    sa.Column('load_after', sa.JSON(), nullable=True),
    sa.Column('sysctls_client', sa.JSON(), nullable=True),
    sa.Column('sysctls_server', sa.JSON(), nullable=True),
    sa.Column('link', sa.JSON(), nullable=True),
    sa.Column('document', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id')
    )
    op.create_table('repetitions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('warmup', sa.Boolean(), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('mptcp', sa.Boolean(), nullable=False),
    sa.Column('mib', sa.JSON(), nullable=False),
    sa.Column('mib_server', sa.JSON(), nullable=False),
    sa.Column('series_interval_s', sa.Float(), nullable=True),
    sa.Column('series_t', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id', 'index')
    )
    with op.batch_alter_table('repetitions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_repetitions_run_id'), ['run_id'], unique=False)

    op.create_table('tags',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('value', sa.String(length=500), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'key')
    )
    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.create_index('ix_tags_key_value', ['key', 'value'], unique=False)

    op.create_table('measurements',
    sa.Column('repetition_id', sa.Integer(), nullable=False),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['repetition_id'], ['repetitions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('repetition_id', 'metric')
    )
    op.create_table('subflow_series',
    sa.Column('repetition_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('path', sa.String(length=32), nullable=False),
    sa.Column('throughput_mbps', sa.JSON(), nullable=True),
    sa.Column('rtt_ms', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['repetition_id'], ['repetitions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('repetition_id', 'position')
    )
    op.create_table('subflows',
    sa.Column('repetition_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('path', sa.String(length=32), nullable=False),
    sa.Column('bytes_sent', sa.BigInteger(), nullable=False),
    sa.Column('bytes_acked', sa.BigInteger(), nullable=False),
    sa.Column('retransmits', sa.BigInteger(), nullable=False),
    sa.Column('bytes_retrans', sa.BigInteger(), nullable=False),
    sa.Column('rtt_ms', sa.Float(), nullable=False),
    sa.Column('min_rtt_ms', sa.Float(), nullable=False),
    sa.Column('rtt_median_ms', sa.Float(), nullable=False),
    sa.Column('subflows_opened', sa.Integer(), nullable=False),
    sa.Column('share', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['repetition_id'], ['repetitions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('repetition_id', 'position')
    )


def downgrade() -> None:
    op.drop_table('subflows')
    op.drop_table('subflow_series')
    op.drop_table('measurements')
    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.drop_index('ix_tags_key_value')

    op.drop_table('tags')
    with op.batch_alter_table('repetitions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_repetitions_run_id'))

    op.drop_table('repetitions')
    op.drop_table('environments')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_runs_started_at'))
        batch_op.drop_index(batch_op.f('ix_runs_scenario_id'))
        batch_op.drop_index(batch_op.f('ix_runs_label'))
        batch_op.drop_index(batch_op.f('ix_runs_kernel'))

    op.drop_table('runs')
    with op.batch_alter_table('scenario_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scenario_versions_name'))

    op.drop_table('scenario_versions')
