"""Generated gRPC stubs of proto/nasoa/v1. Do not edit: run scripts/generate_protos.sh."""
