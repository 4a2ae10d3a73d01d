//! metad (placeholder, being written).
