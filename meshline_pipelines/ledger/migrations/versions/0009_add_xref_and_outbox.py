"""Add the cross-reference and the outbox

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 01:05:00
"""

import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('xref',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('entity', sa.Text(), nullable=False),
    sa.Column('canonical_id', sa.Text(), nullable=False),
    sa.Column('system', sa.Text(), nullable=False),
    sa.Column('account', sa.Text(), nullable=False),
    sa.Column('system_id', sa.Text(), nullable=False),
    sa.Column('link_source', sa.Text(), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_xref')),
    sa.UniqueConstraint('entity', 'system', 'account', 'system_id', name=op.f('uq_xref_entity_system_account_system_id'))
    )
    op.create_index(op.f('ix_xref_entity_canonical_id'), 'xref', ['entity', 'canonical_id'], unique=False)
    op.create_table('outbox',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('target', sa.Text(), nullable=False),
    sa.Column('target_account', sa.Text(), nullable=False),
    sa.Column('entity', sa.Text(), nullable=False),
    sa.Column('record_key', sa.Text(), nullable=False),
    sa.Column('source_system', sa.Text(), nullable=False),
    sa.Column('source_account', sa.Text(), nullable=False),
    sa.Column('source_id', sa.Text(), nullable=False),
    sa.Column('version', sa.Text(), nullable=False),
    sa.Column('idempotency_key', sa.Text(), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('target_id', sa.Text(), nullable=True),
    sa.Column('partition_key', sa.Text(), nullable=True),
    sa.Column('run_id', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_outbox_idempotency_key'))
    )
    op.create_index(op.f('ix_outbox_status_target'), 'outbox', ['status', 'target'], unique=False)
    op.create_index(op.f('ix_outbox_source_system_source_id'), 'outbox', ['source_system', 'source_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_outbox_source_system_source_id'), table_name='outbox')
    op.drop_index(op.f('ix_outbox_status_target'), table_name='outbox')
    op.drop_table('outbox')
    op.drop_index(op.f('ix_xref_entity_canonical_id'), table_name='xref')
    op.drop_table('xref')
