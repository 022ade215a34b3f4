//! Parking, the paper's image-processing workload: camera frames in, parking charges out.

pub mod stages;
pub mod vision;
