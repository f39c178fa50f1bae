//! Inbound user-JWT verification (placeholder; being written).
