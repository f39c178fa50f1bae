//! Guarded outbound HTTP client (placeholder; being written).
