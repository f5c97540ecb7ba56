"""Create the ledger tables

Revision ID: 0001
Revises:
Create Date: 2026-12-04 21:25:48.544855
"""

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('trace_id', sa.Text(), nullable=False),
    sa.Column('system', sa.Text(), nullable=False),
    sa.Column('account', sa.Text(), nullable=False),
    sa.Column('entity', sa.Text(), nullable=False),
    sa.Column('record_id', sa.Text(), nullable=False),
    sa.Column('step', sa.Text(), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('details', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_system_record_id'), ['system', 'record_id'], unique=False)

    op.create_table('customers',
    sa.Column('system', sa.Text(), nullable=False),
    sa.Column('account', sa.Text(), nullable=False),
    sa.Column('source_id', sa.Text(), nullable=False),
    sa.Column('version', sa.Text(), nullable=False),
    sa.Column('extra', sa.Text(), nullable=True),
    sa.Column('email', sa.Text(), nullable=True),
    sa.Column('phone', sa.Text(), nullable=True),
    sa.Column('first_name', sa.Text(), nullable=True),
    sa.Column('last_name', sa.Text(), nullable=True),
    sa.Column('state', sa.Text(), nullable=True),
    sa.Column('email_marketing_state', sa.Text(), nullable=True),
    sa.Column('orders_count', sa.BigInteger(), nullable=True),
    sa.Column('total_spent_amount', sa.BigInteger(), nullable=True),
    sa.Column('total_spent_currency', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('content_hash', sa.Text(), nullable=False),
    sa.Column('partition_key', sa.Text(), nullable=False),
    sa.Column('run_id', sa.Text(), nullable=True),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('system', 'account', 'source_id', name=op.f('pk_customers'))
    )
    op.create_table('exceptions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('fingerprint', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('system', sa.Text(), nullable=False),
    sa.Column('account', sa.Text(), nullable=False),
    sa.Column('entity', sa.Text(), nullable=False),
    sa.Column('record_id', sa.Text(), nullable=False),
    sa.Column('partition_key', sa.Text(), nullable=True),
    sa.Column('rule', sa.Text(), nullable=False),
    sa.Column('field', sa.Text(), nullable=True),
    sa.Column('value', sa.Text(), nullable=True),
    sa.Column('owner', sa.Text(), nullable=False),
    sa.Column('decision_owner', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('details', sa.Text(), nullable=True),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('outcome', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('occurrences', sa.Integer(), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('run_id', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_exceptions')),
    sa.UniqueConstraint('fingerprint', name=op.f('uq_exceptions_fingerprint'))
    )
    with op.batch_alter_table('exceptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_exceptions_status_owner'), ['status', 'owner'], unique=False)

    op.create_table('inventory_levels',
    sa.Column('system', sa.Text(), nullable=False),
    sa.Column('account', sa.Text(), nullable=False),
    sa.Column('source_id', sa.Text(), nullable=False),
    sa.Column('version', sa.Text(), nullable=False),
    sa.Column('extra', sa.Text(), nullable=True),
    sa.Column('sku', sa.Text(), nullable=True),
    sa.Column('inventory_item_id', sa.Text(), nullable=True),
    sa.Column('location_id', sa.Text(), nullable=True),
    sa.Column('condition', sa.Text(), nullable=True),
    sa.Column('available', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('content_hash', sa.Text(), nullable=False),
    sa.Column('partition_key', sa.Text(), nullable=False),
    sa.Column('run_id', sa.Text(), nullable=True),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('system', 'account', 'source_id', name=op.f('pk_inventory_levels'))
    )
    op.create_table('order_lines',
    sa.Column('system', sa.Text(), nullable=False),
    sa.Column('account', sa.Text(), nullable=False),
    sa.Column('source_id', sa.Text(), nullable=False),
    sa.Column('version', sa.Text(), nullable=False),
    sa.Column('extra', sa.Text(), nullable=True),
    sa.Column('order_source_id', sa.Text(), nullable=False),
    sa.Column('sku', sa.Text(), nullable=True),
    sa.Column('product_id', sa.Text(), nullable=True),
    sa.Column('variant_id', sa.Text(), nullable=True),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('quantity', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('unit_price_amount', sa.BigInteger(), nullable=True),
    sa.Column('line_total_amount', sa.BigInteger(), nullable=True),
    sa.Column('discount_amount', sa.BigInteger(), nullable=True),
    sa.Column('tax_amount', sa.BigInteger(), nullable=True),
    sa.Column('content_hash', sa.Text(), nullable=False),
    sa.Column('partition_key', sa.Text(), nullable=False),
    sa.Column('run_id', sa.Text(), nullable=True),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('system', 'account', 'source_id', name=op.f('pk_order_lines'))
    )
    op.create_table('orders',
    sa.Column('system', sa.Text(), nullable=False),
    sa.Column('account', sa.Text(), nullable=False),
    sa.Column('source_id', sa.Text(), nullable=False),
    sa.Column('version', sa.Text(), nullable=False),
    sa.Column('extra', sa.Text(), nullable=True),
    sa.Column('order_number', sa.Text(), nullable=True),
    sa.Column('status', sa.Text(), nullable=True),
    sa.Column('fulfillment_status', sa.Text(), nullable=True),
    sa.Column('email', sa.Text(), nullable=True),
    sa.Column('customer_source_id', sa.Text(), nullable=True),
    sa.Column('marketplace_id', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('total_amount', sa.BigInteger(), nullable=False),
    sa.Column('total_currency', sa.Text(), nullable=False),
    sa.Column('total_presentment_amount', sa.BigInteger(), nullable=True),
    sa.Column('total_presentment_currency', sa.Text(), nullable=True),
    sa.Column('subtotal_amount', sa.BigInteger(), nullable=True),
    sa.Column('subtotal_currency', sa.Text(), nullable=True),
    sa.Column('subtotal_presentment_amount', sa.BigInteger(), nullable=True),
    sa.Column('subtotal_presentment_currency', sa.Text(), nullable=True),
    sa.Column('tax_amount', sa.BigInteger(), nullable=True),
    sa.Column('tax_currency', sa.Text(), nullable=True),
    sa.Column('tax_presentment_amount', sa.BigInteger(), nullable=True),
    sa.Column('tax_presentment_currency', sa.Text(), nullable=True),
    sa.Column('discounts_amount', sa.BigInteger(), nullable=True),
    sa.Column('discounts_currency', sa.Text(), nullable=True),
    sa.Column('discounts_presentment_amount', sa.BigInteger(), nullable=True),
    sa.Column('discounts_presentment_currency', sa.Text(), nullable=True),
    sa.Column('shipping_amount', sa.BigInteger(), nullable=True),
    sa.Column('shipping_currency', sa.Text(), nullable=True),
    sa.Column('shipping_presentment_amount', sa.BigInteger(), nullable=True),
    sa.Column('shipping_presentment_currency', sa.Text(), nullable=True),
    sa.Column('content_hash', sa.Text(), nullable=False),
    sa.Column('partition_key', sa.Text(), nullable=False),
    sa.Column('run_id', sa.Text(), nullable=True),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('system', 'account', 'source_id', name=op.f('pk_orders'))
    )
    op.create_table('payments',
    sa.Column('system', sa.Text(), nullable=False),
    sa.Column('account', sa.Text(), nullable=False),
    sa.Column('source_id', sa.Text(), nullable=False),
    sa.Column('version', sa.Text(), nullable=False),
    sa.Column('extra', sa.Text(), nullable=True),
    sa.Column('order_source_id', sa.Text(), nullable=True),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=True),
    sa.Column('gateway', sa.Text(), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('refunded_amount', sa.BigInteger(), nullable=True),
    sa.Column('captured', sa.Boolean(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('content_hash', sa.Text(), nullable=False),
    sa.Column('partition_key', sa.Text(), nullable=False),
    sa.Column('run_id', sa.Text(), nullable=True),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('system', 'account', 'source_id', name=op.f('pk_payments'))
    )
    op.create_table('payout_lines',
    sa.Column('system', sa.Text(), nullable=False),
    sa.Column('account', sa.Text(), nullable=False),
    sa.Column('source_id', sa.Text(), nullable=False),
    sa.Column('version', sa.Text(), nullable=False),
    sa.Column('extra', sa.Text(), nullable=True),
    sa.Column('payout_source_id', sa.Text(), nullable=True),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('fee_amount', sa.BigInteger(), nullable=True),
    sa.Column('net_amount', sa.BigInteger(), nullable=True),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('source_object_id', sa.Text(), nullable=True),
    sa.Column('order_source_id', sa.Text(), nullable=True),
    sa.Column('sku', sa.Text(), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('content_hash', sa.Text(), nullable=False),
    sa.Column('partition_key', sa.Text(), nullable=False),
    sa.Column('run_id', sa.Text(), nullable=True),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('system', 'account', 'source_id', name=op.f('pk_payout_lines'))
    )
    op.create_table('payouts',
    sa.Column('system', sa.Text(), nullable=False),
    sa.Column('account', sa.Text(), nullable=False),
    sa.Column('source_id', sa.Text(), nullable=False),
    sa.Column('version', sa.Text(), nullable=False),
    sa.Column('extra', sa.Text(), nullable=True),
    sa.Column('status', sa.Text(), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('payout_date', sa.DateTime(timezone=True), nullable=True),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('period_end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('content_hash', sa.Text(), nullable=False),
    sa.Column('partition_key', sa.Text(), nullable=False),
    sa.Column('run_id', sa.Text(), nullable=True),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('system', 'account', 'source_id', name=op.f('pk_payouts'))
    )
    op.create_table('raw_payloads',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('system', sa.Text(), nullable=False),
    sa.Column('account', sa.Text(), nullable=False),
    sa.Column('stream', sa.Text(), nullable=False),
    sa.Column('record_id', sa.Text(), nullable=False),
    sa.Column('content_hash', sa.Text(), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('origin', sa.Text(), nullable=False),
    sa.Column('partition_key', sa.Text(), nullable=False),
    sa.Column('fetched_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_raw_payloads')),
    sa.UniqueConstraint('system', 'account', 'stream', 'record_id', 'content_hash', name=op.f('uq_raw_payloads_system_account_stream_record_id_content_hash'))
    )
    op.create_table('refunds',
    sa.Column('system', sa.Text(), nullable=False),
    sa.Column('account', sa.Text(), nullable=False),
    sa.Column('source_id', sa.Text(), nullable=False),
    sa.Column('version', sa.Text(), nullable=False),
    sa.Column('extra', sa.Text(), nullable=True),
    sa.Column('order_source_id', sa.Text(), nullable=True),
    sa.Column('payment_source_id', sa.Text(), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('content_hash', sa.Text(), nullable=False),
    sa.Column('partition_key', sa.Text(), nullable=False),
    sa.Column('run_id', sa.Text(), nullable=True),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('system', 'account', 'source_id', name=op.f('pk_refunds'))
    )


def downgrade() -> None:
    op.drop_table('refunds')
    op.drop_table('raw_payloads')
    op.drop_table('payouts')
    op.drop_table('payout_lines')
    op.drop_table('payments')
    op.drop_table('orders')
    op.drop_table('order_lines')
    op.drop_table('inventory_levels')
    with op.batch_alter_table('exceptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_exceptions_status_owner'))

    op.drop_table('exceptions')
    op.drop_table('customers')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_system_record_id'))

    op.drop_table('audit_events')
