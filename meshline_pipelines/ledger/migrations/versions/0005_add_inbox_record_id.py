"""Add the record ID of each processed inbox event

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 00:40:00
"""

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('inbox_events') as batch:
        batch.add_column(sa.Column('record_id', sa.Text(), nullable=True))
    op.create_index(op.f('ix_inbox_events_system_record_id'), 'inbox_events', ['system', 'record_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_inbox_events_system_record_id'), table_name='inbox_events')
    with op.batch_alter_table('inbox_events') as batch:
        batch.drop_column('record_id')
