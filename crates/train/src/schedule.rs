//! Learning-rate schedules, as a function of the (fractional) epoch.

use crate::config::{OptimConfig, ScheduleKind, SwaConfig};

/// Learning rate at fractional epoch `t` (epoch index + fraction of the epoch done).
pub fn learning_rate(o: &OptimConfig, swa: Option<&SwaConfig>, t: f64) -> f64 {
    let swa_start = swa.map(|s| s.start(o.epochs) as f64);
    if let (Some(s), Some(start)) = (swa, swa_start) {
        if t >= start {
            return s.lr;
        }
    }
    let horizon = swa_start.unwrap_or(o.epochs as f64).max(1e-9);
    match o.schedule {
        ScheduleKind::Constant => o.lr,
        ScheduleKind::Linear => {
            let end = o.lr_end.or(swa.map(|s| s.lr)).unwrap_or(0.0);
            let f = (t / horizon).clamp(0.0, 1.0);
            o.lr + (end - o.lr) * f
        }
        ScheduleKind::Step => {
            let passed = o.milestones.iter().filter(|&&m| t >= m as f64).count();
            o.lr * o.gamma.powi(passed as i32)
        }
        ScheduleKind::Swalp => {
            let ratio = swa.map(|s| s.lr / o.lr).unwrap_or(0.01);
            let x = t / horizon;
            let factor = if x <= 0.5 {
                1.0
            } else if x <= 0.9 {
                1.0 - (1.0 - ratio) * (x - 0.5) / 0.4
            } else {
                ratio
            };
            o.lr * factor
        }
    }
}
