"""The end-to-end run on a real kind cluster (`make e2e-kind`, `scripts/e2e-kind.sh`)."""
