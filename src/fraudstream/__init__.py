"""fraudstream: real-time card-fraud scoring (Kafka -> BentoML/CatBoost -> PostgreSQL)."""

__version__ = "0.1.0"
