//! The outage rule of the runtime (no foresight): a remote request whose answer has not come
//! back by the time the device could have finished it locally (plus [`HEDGE_MARGIN`]) is
//! checked; when its transfer has made so little progress that the answer cannot come back
//! before a local run would finish, the device runs the rest of the model itself.
//!
//! What happens to the request on the wire:
//! - its upload not finished: the transfer is **cancelled** (the connection is dropped, the
//!   bytes not yet acknowledged are never sent, the uplink is free for the next transfer), and
//!   the transfer's progress teaches the rate estimator an upper bound on the rate (bytes
//!   acknowledged / seconds in flight, [`crate::sched::estimate::Estimator::observe_stall`]),
//!   so the following requests stay on the device until a probe finds the link back;
//! - its upload finished (the server has it): the device **hedges**, running locally while the
//!   answer may still come; the first of the two answers, and the server's work is not
//!   recalled.
//!
//! A slow but moving transfer whose projected answer still beats a local run is left alone and
//! checked again later ([`Verdict::Wait`]): the rule reacts to stalls, not to estimation noise.

/// The margin over the local completion time before a request is checked, as a fraction of
/// that time: a remote choice is expected to beat the local run, so an answer this late
/// (10% past the local run) means the estimate was wrong, not merely noisy.
pub const HEDGE_MARGIN: f64 = 0.1;

/// The least margin, seconds: below it a check would fire on timer jitter alone.
pub const HEDGE_MARGIN_MIN_S: f64 = 0.002;

/// When to check a request decided with a local alternative of `local_s` seconds (from the
/// decision, the device's queue included): `local_s` plus the margin.
pub fn deadline_s(local_s: f64) -> f64 {
    local_s + (HEDGE_MARGIN * local_s).max(HEDGE_MARGIN_MIN_S)
}

/// A remote request's state at a check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Bytes of the request to send.
    pub bytes: u64,
    /// Bytes acknowledged so far.
    pub acked: u64,
    /// Seconds the transfer has been on the link (0 while it waits behind others).
    pub in_flight_s: f64,
    /// Seconds the answer needs once the upload is done (half the RTT, server queue and compute,
    /// half the RTT), as estimated.
    pub after_upload_s: f64,
}

/// What to do at a check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The answer is still projected before a local run: check again after `recheck_s`.
    Wait {
        /// Seconds until the next check.
        recheck_s: f64,
    },
    /// Run the rest on the device; `cancel` when the upload is unfinished (drop it and learn
    /// the rate bound `acked / in_flight_s`), else hedge (the first answer wins).
    FallBack {
        /// Whether the transfer is cancelled.
        cancel: bool,
    },
}

impl Progress {
    /// Seconds until the answer, projected at the rate the transfer has shown so far (infinite
    /// for a transfer that has not moved).
    pub fn projected_s(&self) -> f64 {
        let left = self.bytes.saturating_sub(self.acked);
        if left == 0 {
            return self.after_upload_s;
        }
        if self.acked == 0 || self.in_flight_s <= 0.0 {
            return f64::INFINITY;
        }
        let shown = self.acked as f64 / self.in_flight_s;
        left as f64 / shown + self.after_upload_s
    }

    /// The rule: fall back when the projected answer is later than a local run of `local_s`
    /// seconds started now; otherwise wait and check again after the local run's time (the
    /// longest a local run could have taken if started now).
    pub fn verdict(&self, local_s: f64) -> Verdict {
        let uploaded = self.acked >= self.bytes;
        if self.projected_s() > local_s {
            Verdict::FallBack { cancel: !uploaded }
        } else {
            Verdict::Wait {
                recheck_s: deadline_s(local_s),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL_S: f64 = 0.05;

    fn progress(acked: u64, in_flight_s: f64) -> Progress {
        Progress {
            bytes: 150_000,
            acked,
            in_flight_s,
            after_upload_s: 0.03,
        }
    }

    #[test]
    fn a_stalled_transfer_falls_back_and_is_cancelled() {
        assert_eq!(
            progress(0, 0.06).verdict(LOCAL_S),
            Verdict::FallBack { cancel: true }
        );
        // A transfer that moved a little and then stopped: the bound it shows is far too slow.
        assert_eq!(
            progress(1_500, 2.0).verdict(LOCAL_S),
            Verdict::FallBack { cancel: true }
        );
    }

    #[test]
    fn a_slow_but_moving_transfer_is_left_alone() {
        // 140 kB of 150 kB in 60 ms: 10 kB left at 2.3 MB/s is 4 ms, plus 30 ms: before a
        // 50 ms local run.
        let p = progress(140_000, 0.06);
        assert!(p.projected_s() < LOCAL_S);
        assert!(matches!(p.verdict(LOCAL_S), Verdict::Wait { recheck_s } if recheck_s > LOCAL_S));
    }

    #[test]
    fn an_uploaded_request_late_from_the_server_is_hedged_not_cancelled() {
        let p = Progress {
            after_upload_s: 1.0,
            ..progress(150_000, 0.06)
        };
        assert_eq!(p.verdict(LOCAL_S), Verdict::FallBack { cancel: false });
    }

    #[test]
    fn the_deadline_is_the_local_time_plus_a_margin() {
        assert!((deadline_s(1.0) - 1.1).abs() < 1e-12);
        assert!((deadline_s(0.0) - HEDGE_MARGIN_MIN_S).abs() < 1e-12);
    }
}
