"""Real infrastructure as local processes (Kafka KRaft broker, PostgreSQL 16) for tests and `make up`."""
