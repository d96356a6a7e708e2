//! The scheduler under load (deterministic, no GPU): the device's own queue in the cost model,
//! the capacity check behind `edgecut simulate`'s overload warning, utilisation per policy, and
//! the stale-rate rule (probe before deciding).

use edgecut::model::Model;
use edgecut::sched::cost::{CostTable, ExitProbabilities};
use edgecut::sched::estimate::Estimator;
use edgecut::sched::policy::{Dynamic, Fixed, Oracle, Policy};
use edgecut::sched::profile::Profile;
use edgecut::sched::{Cut, Encoding, Estimates};
use edgecut::sim::trace::Trace;
use edgecut::sim::{simulate, Arrivals, ExitSource, SimConfig, SimResult};
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn effnet_table() -> CostTable {
    let m = Model::load(root().join("models/efficientnet-b0")).expect("efficientnet-b0 loads");
    let dir = root().join("models/efficientnet-b0/profiles");
    let device = Profile::load(dir.join("device.json"), &m).expect("device profile matches");
    let server = Profile::load(dir.join("server.json"), &m).expect("server profile matches");
    CostTable::new(&m, &device, &server, &ExitProbabilities::none(&m)).expect("table")
}

/// The clairvoyant oracle over every encoding, no exits.
fn oracle_run(t: &CostTable, trace: &Trace, cfg: &SimConfig) -> SimResult {
    let mut oracle = Oracle::with(t, &Encoding::ALL, None).expect("oracle");
    simulate(t, trace, &mut oracle, cfg, &ExitSource::None)
}

fn totals(t: &CostTable) -> (f64, f64, f64) {
    let device: f64 = t.device_block_s.iter().sum();
    let server: f64 = t.server_block_s.iter().sum();
    (device, server, t.options[0].bytes as f64)
}

#[test]
fn a_device_backlog_sends_work_to_the_server() {
    let t = effnet_table();
    let (device, _, image) = totals(&t);
    // Sending the image takes half the device-only time: alone, a split is best, server-only
    // close behind.
    let idle = Estimates::from_mb_ms(image / (0.5 * device) * 1e-6, 20.0, 0.0);
    let d = Dynamic::new(&t);
    let alone = d.choose(&idle);
    assert_ne!(alone.option.cut, Cut::Server, "{alone:?}");
    // One device-only run queued ahead: every option with a head waits for it.
    // One device-only run queued ahead: every option with a head waits for it.
    let busy = d.choose(&idle.with_backlog(device, 0.0, 0.0));
    assert_eq!(
        busy.option.cut,
        Cut::Server,
        "{alone:?} alone, {busy:?} behind the backlog"
    );
    // The waits enter the expected latency: the device's wait in full for device-only.
    let device_only = t.options.last().expect("device-only");
    let waited = device_only.expected(&idle.with_backlog(3.0, 0.0, 0.0));
    assert!((waited - device_only.expected(&idle) - 3.0).abs() < 1e-9);
}

#[test]
fn a_server_backlog_keeps_work_on_the_device() {
    let t = effnet_table();
    let (device, _, image) = totals(&t);
    // A fast link: server-only alone.
    let idle = Estimates::from_mb_ms(100.0 * image * 1e-6, 20.0, 0.0);
    let d = Dynamic::new(&t);
    assert_eq!(d.choose(&idle).option.cut, Cut::Server);
    let busy = d.choose(&idle.with_backlog(0.0, 0.0, 2.0 * device));
    assert!(t.options[busy.index].device_s > 0.0, "{busy:?}");
    // A queued uplink delays every remote option by at least the wait.
    let server_only = &t.options[0];
    let queued = server_only.expected(&idle.with_backlog(0.0, 5.0, 0.0));
    assert!(queued >= server_only.expected(&idle) + 5.0 - 1e-6);
}

#[test]
fn under_overload_the_queue_aware_policy_drains_faster_than_every_static_policy() {
    let t = effnet_table();
    let (device, server, image) = totals(&t);
    // Twice what server-only can serve, on a link where the image takes a tenth of the
    // server's time.
    let trace = Trace::constant(10.0 * image / server).expect("trace");
    let cfg = SimConfig {
        requests: 300,
        arrivals: Arrivals::Periodic { rate: 2.0 / server },
        ..SimConfig::default()
    };
    let cap = t.capacity(trace.mean_rate(), 1);
    assert!(cap.overloaded(2.0 / server));
    assert!(cap.mix >= cap.options[cap.best_option] - 1e-12);
    assert!(
        cap.mix > 1.0 / server,
        "device and server together beat the server alone"
    );
    let run = |p: &mut dyn Policy| simulate(&t, &trace, p, &cfg, &ExitSource::None);
    let dynamic = run(&mut Dynamic::new(&t));
    let mut best_static = f64::INFINITY;
    for o in &t.options {
        best_static = best_static.min(run(&mut Fixed::new(&t, o.choice).expect("fixed")).mean());
    }
    assert!(
        dynamic.mean() < best_static,
        "dynamic {} vs best static {best_static}",
        dynamic.mean()
    );
    // It used both ends: the device and the server both near saturation.
    let u = dynamic.utilisation;
    assert!(u.device > 0.8 && u.server > 0.8, "{u:?}");
    let server_only = run(&mut Fixed::server_only(&t));
    assert!(server_only.utilisation.device == 0.0 && server_only.utilisation.server > 0.95);
    assert!(device > 0.0);
}

#[test]
fn the_overload_warning_appears_only_when_every_policy_is_overloaded() {
    let run = |rate: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_edgecut"))
            .args([
                "simulate",
                "models/efficientnet-b0",
                "--trace",
                "steps:0.3Mbit,30Mbit@20",
                "--requests",
                "40",
                "--policies",
                "server,dynamic",
                "--json",
                "--rate",
                rate,
            ])
            .current_dir(root())
            .output()
            .expect("runs the binary");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        (v, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (v, err) = run("2");
    assert_eq!(v["overload"]["overloaded"], true, "{v}");
    assert!(err.contains("exceed every policy's capacity"), "{err}");
    for p in ["server", "dynamic"] {
        let u = &v["policies"][p]["utilisation"];
        for r in ["device", "uplink", "server"] {
            let x = u[r].as_f64().expect("utilisation");
            assert!((0.0..=1.0 + 1e-9).contains(&x), "{p} {r} {x}");
        }
    }
    let (v, err) = run("0.1");
    assert_eq!(v["overload"]["overloaded"], false, "{v}");
    assert!(!err.contains("capacity"), "{err}");
}

#[test]
fn a_stale_rate_estimate_is_refreshed_by_a_probe_before_deciding() {
    let mut est = Estimator::default();
    assert!(est.rate_is_stale(0.0, 1.0), "never measured");
    est.observe_transfer(1000, 0.001);
    est.mark_rate_sample(5.0);
    assert!(!est.rate_is_stale(5.5, 1.0));
    assert!(est.rate_is_stale(6.5, 1.0));
    est.rate.forget();
    assert_eq!(est.rate.estimate(), None);

    // Requests every 10 s on a link alternating every 20 s between a rate where server-only is
    // best and one where it is not: every estimate is stale at the next request.
    let t = effnet_table();
    let (device, server, image) = totals(&t);
    let high = 100.0 * image / server;
    let low = image / (1.2 * device);
    let trace = Trace::steps(&[high, low], 20.0).expect("trace");
    let cfg = SimConfig {
        requests: 200,
        arrivals: Arrivals::Periodic { rate: 0.1 },
        ..SimConfig::default()
    };
    let dynamic = simulate(&t, &trace, &mut Dynamic::new(&t), &cfg, &ExitSource::None);
    assert_eq!(
        dynamic.probe_bytes,
        200 * cfg.probe_bytes,
        "one probe per request"
    );
    let oracle = oracle_run(&t, &trace, &cfg);
    // With the probe, every request sees its own phase: the oracle's choices.
    let same = (0..cfg.requests)
        .filter(|&i| dynamic.options[i] == oracle.options[i])
        .count();
    assert!(
        same >= cfg.requests * 95 / 100,
        "{same} of {}",
        cfg.requests
    );
    assert!(dynamic.mean() <= oracle.mean() * 1.05);
    // Without probes (the rule off), the stale estimate mixes the phases and does worse.
    let no_probe = SimConfig {
        probe_bytes: 0,
        ..cfg.clone()
    };
    let blind = simulate(
        &t,
        &trace,
        &mut Dynamic::new(&t),
        &no_probe,
        &ExitSource::None,
    );
    assert_eq!(blind.probe_bytes, 0);
    assert!(
        blind.mean() > dynamic.mean(),
        "{} vs {}",
        blind.mean(),
        dynamic.mean()
    );
    // Fresh estimates (a transfer every 0.5 s keeps the link measured): hardly any probe.
    let busy = SimConfig {
        arrivals: Arrivals::Periodic { rate: 2.0 },
        requests: 50,
        workers: 4,
        ..cfg
    };
    let fresh = simulate(
        &t,
        &Trace::constant(high).expect("trace"),
        &mut Dynamic::new(&t),
        &busy,
        &ExitSource::None,
    );
    assert!(
        fresh.probe_bytes <= 2 * busy.probe_bytes,
        "{}",
        fresh.probe_bytes
    );
}

#[test]
fn a_probe_is_not_sent_when_no_rate_could_change_the_choice() {
    // A round trip far longer than the whole model on the device: no rate makes offloading win,
    // so a stale estimate costs nothing and no request waits for a probe.
    let t = effnet_table();
    let (device, _, _) = totals(&t);
    let trace = Trace::constant(1e6).expect("trace");
    let cfg = SimConfig {
        requests: 50,
        arrivals: Arrivals::Periodic { rate: 0.1 },
        rtt_s: 10.0 * device,
        ..SimConfig::default()
    };
    let dynamic = simulate(&t, &trace, &mut Dynamic::new(&t), &cfg, &ExitSource::None);
    assert_eq!(dynamic.probe_bytes, 0);
    assert!(dynamic.options.iter().all(|&i| !t.options[i].remote()));
}

/// A link where server-only is best, with an outage of `outage` seconds after every `up`
/// seconds.
fn outage_trace(t: &CostTable, up: f64, outage: f64) -> Trace {
    let (_, server, image) = totals(t);
    let high = 100.0 * image / server;
    Trace::from_segments("outage", &[up, outage], &[high, 0.0]).expect("trace")
}

#[test]
fn a_stalled_transfer_falls_back_to_the_device_and_the_next_requests_stay_local() {
    let t = effnet_table();
    let (device, _, _) = totals(&t);
    // Outages of 6 device-only runs every 20; a request every 1.5 device-only runs, and the
    // estimate stale (a probe first) after 2 runs without a transfer: while the link is up the
    // requests' own transfers keep it fresh, so the first request in an outage is sent into it.
    let period = 1.5 * device;
    let trace = outage_trace(&t, 20.0 * device, 6.0 * device);
    let cfg = SimConfig {
        requests: 170,
        arrivals: Arrivals::Periodic { rate: 1.0 / period },
        probe_interval_s: 2.0 * device,
        ..SimConfig::default()
    };
    let run = |cfg: &SimConfig| simulate(&t, &trace, &mut Dynamic::new(&t), cfg, &ExitSource::None);
    let hedged = run(&cfg);
    let waiting = run(&SimConfig {
        hedge: false,
        ..cfg.clone()
    });
    assert_eq!(waiting.fallbacks, 0);
    // One request per outage is caught in it (10 outages in 170 requests of 1.5 runs each).
    assert!(
        (5..=12).contains(&hedged.cancelled),
        "{} cancelled",
        hedged.cancelled
    );
    // Caught: answered by the device by the deadline plus its own run, never after the outage.
    let worst = hedged.latencies.iter().cloned().fold(0.0, f64::max);
    let bound = edgecut::sched::hedge::deadline_s(device) + device + 1e-6;
    assert!(worst <= bound, "worst {worst} s, bound {bound} s");
    let worst_waiting = waiting.latencies.iter().cloned().fold(0.0, f64::max);
    assert!(worst_waiting > 4.0 * device, "{worst_waiting}");
    assert!(hedged.mean() < waiting.mean());
    // After a stall the next requests in the outage stay on the device.
    let cycle = 26.0 * device;
    let in_outage = |a: f64| (a % cycle) >= 20.0 * device + period;
    let mut checked = 0;
    for (i, &a) in hedged.arrivals.iter().enumerate() {
        if in_outage(a) && (a % cycle) < 26.0 * device - period {
            assert!(!t.options[hedged.options[i]].remote(), "request {i} at {a}");
            checked += 1;
        }
    }
    assert!(checked > 10, "{checked}");
    // The clairvoyant oracle never sends into the outage: a bound at this light load.
    let oracle = oracle_run(&t, &trace, &cfg);
    assert!(
        oracle.mean() <= hedged.mean(),
        "{} vs {}",
        oracle.mean(),
        hedged.mean()
    );
}

#[test]
fn a_slow_but_moving_transfer_is_not_cancelled() {
    // The rate drops to where the image takes 1.5 device-only runs: the first request sent
    // on the old estimate is late past its deadline but moving, and its answer still beats a
    // local run, so it is left alone.
    let t = effnet_table();
    let (device, server, image) = totals(&t);
    let high = 100.0 * image / server;
    let low = image / (1.5 * device);
    let trace = Trace::steps(&[high, low], 20.0 * device).expect("trace");
    // No probe: the estimate from the fast phase is what the first slow request is sent on.
    let cfg = SimConfig {
        requests: 60,
        arrivals: Arrivals::Periodic {
            rate: 1.0 / (2.0 * device),
        },
        probe_bytes: 0,
        ..SimConfig::default()
    };
    let hedged = simulate(&t, &trace, &mut Dynamic::new(&t), &cfg, &ExitSource::None);
    let waiting = simulate(
        &t,
        &trace,
        &mut Dynamic::new(&t),
        &SimConfig {
            hedge: false,
            ..cfg.clone()
        },
        &ExitSource::None,
    );
    assert!(
        hedged.latencies.iter().any(|&l| l > 1.2 * device),
        "some request was late past its deadline"
    );
    assert_eq!(hedged.fallbacks, 0);
    assert_eq!(hedged.latencies, waiting.latencies);
}

#[test]
fn a_stall_bounds_the_rate_until_a_transfer_completes() {
    let mut est = Estimator::default();
    est.observe_transfer(1_000_000, 0.1); // 10 MB/s
    est.observe_transfer(1_000_000, 0.1);
    // Moving at least as fast as the estimate: no news, no outage.
    est.observe_stall(2_000_000, 0.1);
    assert!(!est.in_outage());
    // Nothing acknowledged in half a second: the rate is at most the floor.
    est.observe_stall(0, 0.5);
    assert!(est.in_outage());
    let e = est.estimates().rate_bytes_per_s;
    assert_eq!(e, edgecut::sched::estimate::STALL_RATE_FLOOR);
    // A probe reasons about the rate from before the stall.
    assert!((est.probe_reference().rate_bytes_per_s - 1e7).abs() < 1.0);
    // A transfer landing after the stall counts but does not end it.
    est.observe_stalled_transfer(4_000, 2.0);
    assert!(est.in_outage());
    // A transfer that completes ends it: its sample alone is the estimate.
    est.observe_transfer(100_000, 0.05);
    assert!(!est.in_outage());
    assert!((est.estimates().rate_bytes_per_s - 2e6).abs() < 1.0);
}
