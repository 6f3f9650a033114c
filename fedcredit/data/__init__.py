"""Node data: role schemas, USCC codes, synthetic SME data, reading, writing and validation."""
