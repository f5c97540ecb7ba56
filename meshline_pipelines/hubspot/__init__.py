"""HubSpot CRM: contacts read as canonical customers, and customers written back as contacts."""
