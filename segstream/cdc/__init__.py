"""Change data capture from the shop's PostgreSQL: the Debezium connector's configuration,
the check that its topics fit segstream, and the database side (tables, live mutations)."""
