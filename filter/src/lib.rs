//! citygate filter (placeholder while the skeleton lands).
