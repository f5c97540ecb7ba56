"""Add exception transitions and the closing time of an exception

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 00:50:00
"""

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('exception_transitions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('exception_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.Text(), nullable=False),
    sa.Column('from_status', sa.Text(), nullable=True),
    sa.Column('to_status', sa.Text(), nullable=False),
    sa.Column('from_owner', sa.Text(), nullable=True),
    sa.Column('to_owner', sa.Text(), nullable=True),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('run_id', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_exception_transitions'))
    )
    op.create_index(op.f('ix_exception_transitions_exception_id_id'), 'exception_transitions',
                    ['exception_id', 'id'], unique=False)
    with op.batch_alter_table('exceptions') as batch:
        batch.add_column(sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('exceptions') as batch:
        batch.drop_column('closed_at')
    op.drop_index(op.f('ix_exception_transitions_exception_id_id'), table_name='exception_transitions')
    op.drop_table('exception_transitions')
