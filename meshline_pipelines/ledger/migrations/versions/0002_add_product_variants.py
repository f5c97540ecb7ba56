"""Add product variants

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 23:13:36.784212
"""

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('product_variants',
    sa.Column('system', sa.Text(), nullable=False),
    sa.Column('account', sa.Text(), nullable=False),
    sa.Column('source_id', sa.Text(), nullable=False),
    sa.Column('version', sa.Text(), nullable=False),
    sa.Column('extra', sa.Text(), nullable=True),
    sa.Column('product_id', sa.Text(), nullable=False),
    sa.Column('sku', sa.Text(), nullable=True),
    sa.Column('product_title', sa.Text(), nullable=True),
    sa.Column('variant_title', sa.Text(), nullable=True),
    sa.Column('inventory_item_id', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('content_hash', sa.Text(), nullable=False),
    sa.Column('partition_key', sa.Text(), nullable=False),
    sa.Column('run_id', sa.Text(), nullable=True),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('system', 'account', 'source_id', name=op.f('pk_product_variants'))
    )


def downgrade() -> None:
    op.drop_table('product_variants')
