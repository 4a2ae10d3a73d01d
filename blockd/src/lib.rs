//! blockd (placeholder, being written).
