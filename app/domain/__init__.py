"""The product's rules, spoken only to the CrmClient port, core and the database."""
