//! Scalar resources offered by nodes and asked for by tasks.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Resources {
    pub cpus: f64,
    /// MiB.
    pub mem: f64,
    /// MiB.
    pub disk: f64,
    pub gpus: u32,
}

impl Resources {
    pub fn fits_in(&self, free: &Resources) -> bool {
        // A small epsilon so that 10 x 0.1 cpus fit in 1.0.
        const EPS: f64 = 1e-9;
        self.cpus <= free.cpus + EPS
            && self.mem <= free.mem + EPS
            && self.disk <= free.disk + EPS
            && self.gpus <= free.gpus
    }

    pub fn add(&mut self, o: &Resources) {
        self.cpus += o.cpus;
        self.mem += o.mem;
        self.disk += o.disk;
        self.gpus += o.gpus;
    }

    pub fn sub(&mut self, o: &Resources) {
        self.cpus -= o.cpus;
        self.mem -= o.mem;
        self.disk -= o.disk;
        self.gpus = self.gpus.saturating_sub(o.gpus);
    }
}
