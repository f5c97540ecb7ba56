"""Governed delivery to ERP, CRM and fulfillment systems through an outbox."""
