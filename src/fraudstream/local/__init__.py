"""Real infrastructure as local processes (Kafka KRaft, PostgreSQL 16) for tests and `make up`."""
