"""Generated from proto/nasoa/v1/*.proto by scripts/generate_protos.sh. Do not edit."""
