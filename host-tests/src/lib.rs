//! citygate host (placeholder).
