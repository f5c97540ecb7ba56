"""Add watermarks

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 00:20:00
"""

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('watermarks',
    sa.Column('system', sa.Text(), nullable=False),
    sa.Column('account', sa.Text(), nullable=False),
    sa.Column('stream', sa.Text(), nullable=False),
    sa.Column('cursor_value', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ids_at_cursor', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('run_id', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('system', 'account', 'stream', name=op.f('pk_watermarks'))
    )


def downgrade() -> None:
    op.drop_table('watermarks')
