"""Add the alerts sent for exceptions

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 01:00:00
"""

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alerts_sent',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('fingerprint', sa.Text(), nullable=False),
    sa.Column('event', sa.Text(), nullable=False),
    sa.Column('channel', sa.Text(), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts_sent')),
    sa.UniqueConstraint('fingerprint', 'event', 'channel', name=op.f('uq_alerts_sent_fingerprint_event_channel'))
    )
    op.create_index(op.f('ix_alerts_sent_channel_sent_at'), 'alerts_sent', ['channel', 'sent_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_alerts_sent_channel_sent_at'), table_name='alerts_sent')
    op.drop_table('alerts_sent')
