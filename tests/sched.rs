//! Scheduling: traces, estimators, the cost model, policies and the simulator (deterministic,
//! no GPU), and the `profile` / `simulate` commands' bad-input handling.

use edgecut::model::Model;
use edgecut::sched::cost::{CostTable, ExitProbabilities, SampleExits};
use edgecut::sched::estimate::{evaluate, Estimator, RateEstimator, RateMethod};
use edgecut::sched::policy::{self, Dynamic, Fixed, Oracle, Policy};
use edgecut::sched::profile::Profile;
use edgecut::sched::{Choice, Cut, Encoding, Estimates, SchedError};
use edgecut::sim::trace::{Trace, TraceError};
use edgecut::sim::{simulate, Arrivals, ExitSource, ServerLoad, SimConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn effnet() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        Model::load(root().join("models/efficientnet-b0")).expect("efficientnet-b0 loads")
    })
}

fn effnet_table() -> CostTable {
    let m = effnet();
    let dir = root().join("models/efficientnet-b0/profiles");
    let device = Profile::load(dir.join("device.json"), m).expect("device profile matches");
    let server = Profile::load(dir.join("server.json"), m).expect("server profile matches");
    CostTable::new(m, &device, &server, &ExitProbabilities::none(m)).expect("table")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgecut-sched-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The real traces, read in place (`EDGECUT_TRACES` or `../shared/data/traces`); `None` (loudly) if absent.
fn traces_dir(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("EDGECUT_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/data/traces"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED {test}: no real traces at {} (set EDGECUT_TRACES)",
            dir.display()
        );
        None
    }
}

#[test]
fn transfers_cross_a_stepping_trace_at_its_rates() {
    // 1 MB/s for 2 s, then 4 MB/s for 2 s, looping.
    let t = Trace::steps(&[1e6, 4e6], 2.0).unwrap();
    assert!((t.transfer_end(0.0, 1e6) - 1.0).abs() < 1e-9);
    // 1.5 MB from 1 s: 1 MB by 2 s, then 0.5 MB at 4 MB/s = 0.125 s.
    assert!((t.transfer_end(1.0, 1.5e6) - 2.125).abs() < 1e-9);
    // One whole loop carries 10 MB in 4 s; 20 MB from 0 takes two loops.
    assert!((t.transfer_end(0.0, 20e6) - 8.0).abs() < 1e-9);
    assert_eq!(t.rate_at(5.0), 1e6);
    assert!((t.mean_rate() - 2.5e6).abs() < 1e-6);
}

#[test]
fn zero_rate_outages_delay_transfers_until_the_link_returns() {
    let t = Trace::from_segments("outage", &[1.0, 2.0, 1.0], &[1e6, 0.0, 1e6]).unwrap();
    assert!((t.transfer_end(0.5, 1e6) - 3.5).abs() < 1e-9);
}

#[test]
fn trace_readers_parse_each_format_and_reject_bad_files() {
    let d = scratch("formats");
    let pensieve = d.join("p");
    std::fs::write(&pensieve, "0.0\t8.0\n1.0\t16.0\n3.0\t8.0\n").unwrap();
    let t = Trace::load(&pensieve, None).unwrap();
    assert_eq!(t.rate_at(0.5), 1e6);
    assert_eq!(t.rate_at(2.0), 2e6);
    assert!(
        (t.period() - 5.0).abs() < 1e-12,
        "last sample lasts like the one before"
    );

    let mahimahi = d.join("m.up");
    std::fs::write(&mahimahi, "1\n1\n2\n4\n").unwrap();
    let t = Trace::load(&mahimahi, None).unwrap();
    assert!((t.period() - 0.004).abs() < 1e-12);
    assert!((t.bytes_until(0.004) - 4.0 * 1500.0).abs() < 1e-6);

    let csv = d.join("c.csv");
    std::fs::write(
        &csv,
        "a,x_throughput_mbps,y_throughput_mbps\nq,8,80\nq,16,160\n",
    )
    .unwrap();
    assert_eq!(Trace::load(&csv, None).unwrap().rate_at(0.5), 1e6);
    assert_eq!(
        Trace::load(&csv, Some("y_throughput_mbps"))
            .unwrap()
            .rate_at(1.5),
        20e6
    );
    assert!(matches!(
        Trace::load(&csv, Some("nope")),
        Err(TraceError::Column { .. })
    ));

    let cases: [(&str, &str); 5] = [
        ("empty", ""),
        ("garbage", "0.0\tfast\n"),
        ("negative", "0.0\t1.0\n1.0\t-2.0\n"),
        ("backwards", "1.0\t1.0\n0.5\t1.0\n"),
        ("zeros", "0.0\t0\n1.0\t0\n"),
    ];
    for (name, text) in cases {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        let e = Trace::pensieve(&p).expect_err(name);
        let msg = e.to_string();
        assert!(msg.contains(name) || msg.contains("line"), "{name}: {msg}");
    }
    assert!(Trace::from_spec("const:0", None).is_err());
    assert!(Trace::from_spec("const:-3", None).is_err());
    assert!(Trace::from_spec("steps:1,2", None).is_err());
}

#[test]
fn real_traces_load_in_place_with_their_documented_means() {
    let Some(dir) = traces_dir("real_traces_load_in_place_with_their_documented_means") else {
        return;
    };
    let lte = Trace::load(&dir.join("mahimahi-lte/Verizon-LTE-short.up"), None).unwrap();
    let mbit = lte.mean_rate() * 8e-6;
    assert!(
        (4.0..8.0).contains(&mbit),
        "LTE uplink mean {mbit} Mbit/s (README: 6.0)"
    );
    assert!((lte.period() - 140.0).abs() < 5.0);
    let g3 = Trace::load(&dir.join("norway-hsdpa-3g/norway_bus_1"), None).unwrap();
    assert!((0.1..5.0).contains(&(g3.mean_rate() * 8e-6)));
    let g5 = Trace::load(
        &dir.join("5g-mobility/car-driving-trace-1.csv"),
        Some("TMobile_throughput_mbps"),
    )
    .unwrap();
    assert!(g5.name.contains("TMobile"));
    assert!((g5.period() - 120.0).abs() < 1e-9);
}

#[test]
fn markov_traces_are_reproducible_from_their_seed() {
    let a = Trace::markov(10e6, 1e6, 5.0, 100.0, 0.1, 3).unwrap();
    let b = Trace::markov(10e6, 1e6, 5.0, 100.0, 0.1, 3).unwrap();
    let c = Trace::markov(10e6, 1e6, 5.0, 100.0, 0.1, 4).unwrap();
    assert_eq!(a, b);
    assert_ne!(
        a.segments().collect::<Vec<_>>(),
        c.segments().collect::<Vec<_>>()
    );
}

#[test]
fn harmonic_mean_ignores_a_fast_outlier_more_than_the_arithmetic_mean() {
    let mut h = RateEstimator::new(RateMethod::Harmonic { window: 5 });
    for r in [1e6, 1e6, 1e6, 1e6, 100e6] {
        h.observe(r as u64, 1.0);
    }
    let e = h.estimate().unwrap();
    assert!(e < 1.3e6, "harmonic {e}");
    let mut ewma = RateEstimator::new(RateMethod::Ewma {
        alpha: 0.5,
        clip: 2.0,
    });
    for r in [1e6, 1e6, 100e6] {
        ewma.observe(r as u64, 1.0);
    }
    assert!(
        (ewma.estimate().unwrap() - 1.5e6).abs() < 1.0,
        "clipped to 2x before blending"
    );
    // Empty or instantaneous transfers measure nothing.
    h.observe(0, 1.0);
    h.observe(10, 0.0);
    assert_eq!(h.estimate().unwrap(), e);
    let mut est = Estimator::default();
    est.observe_queue_us(2500);
    assert!((est.estimates().queue_s - 0.0025).abs() < 1e-12);
    let pe = evaluate(RateMethod::Last, &[(1000, 1.0), (1000, 1.0), (2000, 1.0)]);
    assert_eq!(pe.samples, 2);
    assert!((pe.mape - 0.5).abs() < 1e-12, "0 and 100% errors");
}

#[test]
fn the_cost_model_matches_the_design_formula() {
    let m = effnet();
    let n = m.blocks.len();
    let dev: Vec<f64> = (0..n).map(|i| 0.01 * (i + 1) as f64).collect();
    let srv: Vec<f64> = dev.iter().map(|d| d / 10.0).collect();
    let t =
        CostTable::from_times(m, dev.clone(), srv.clone(), &ExitProbabilities::none(m)).unwrap();
    let est = Estimates::from_mb_ms(10.0, 20.0, 5.0);
    let k = t.candidates[1];
    let o = &t.options[t
        .index(Choice {
            cut: Cut::After(k),
            encoding: Encoding::Fp16,
        })
        .unwrap()];
    let expect = dev[..=k].iter().sum::<f64>()
        + (2 * m.blocks[k].output_elems()) as f64 / 10e6
        + 0.020
        + 0.005
        + srv[k + 1..].iter().sum::<f64>();
    assert!((o.expected(&est) - expect).abs() < 1e-12);
    let server = &t.options[0];
    assert_eq!(
        server.choice,
        Choice {
            cut: Cut::Server,
            encoding: Encoding::Int8
        }
    );
    assert_eq!(
        server.bytes,
        3 * 224 * 224,
        "an image input is sent as 8-bit pixels, 1 byte each"
    );
    let device = t.options.last().unwrap();
    assert!((device.expected(&est) - dev.iter().sum::<f64>()).abs() < 1e-12);
}

#[test]
fn exits_on_the_device_discount_the_remote_part() {
    let m = Model::load(root().join("models/mnist-fixture")).unwrap();
    let n = m.blocks.len();
    let ex = ExitProbabilities::calibrated(&m, vec![0.5]).unwrap();
    let t = CostTable::from_times(&m, vec![1.0; n], vec![0.1; n], &ex).unwrap();
    let est = Estimates::from_mb_ms(1.0, 0.0, 0.0);
    let k = t.candidates[0];
    let o = &t.options[t
        .index(Choice {
            cut: Cut::After(k),
            encoding: Encoding::Fp32,
        })
        .unwrap()];
    let after = ex.after_block[0];
    let bytes = (4 * m.blocks[k].output_elems()) as f64 / 1e6;
    let expect =
        0.5 * (after + 1) as f64 + 0.5 * ((k + 1) as f64 + bytes + 0.1 * (n - k - 1) as f64);
    assert!((o.expected(&est) - expect).abs() < 1e-12);
    assert_eq!(t.options[0].p_exit, 0.0, "server-only runs no device exit");
    assert!(ExitProbabilities::calibrated(&m, vec![1.5]).is_err());
    let s = SampleExits {
        confidence: vec![0.95],
        exit_correct: vec![false],
        final_correct: true,
    };
    assert_eq!(s.first_exit(0.9, 1), Some(0));
    assert!(s.correct(0.9, 0) && !s.correct(0.9, 1));
}

#[test]
fn dynamic_sends_less_when_the_rate_drops() {
    let t = effnet_table();
    let d = Dynamic::new(&t);
    let fast = d.choose(&Estimates::from_mb_ms(1000.0, 1.0, 0.0));
    let slow = d.choose(&Estimates::from_mb_ms(0.001, 1.0, 0.0));
    assert_eq!(fast.option.cut, Cut::Server);
    assert_eq!(slow.option.cut, Cut::Device);
    let only_fp32 = Dynamic::with(&t, &[Encoding::Fp32], None).unwrap();
    for r in [0.01, 0.1, 1.0, 10.0, 100.0] {
        let c = only_fp32
            .choose(&Estimates::from_mb_ms(r, 10.0, 0.0))
            .option;
        let fp32_or_an_end =
            |c: &Choice| c.encoding == Encoding::Fp32 || matches!(c.cut, Cut::Server | Cut::Device);
        assert!(fp32_or_an_end(&c));
        // The choice is the minimum over every allowed option.
        let best = t
            .options
            .iter()
            .filter(|o| fp32_or_an_end(&o.choice))
            .map(|o| o.expected(&Estimates::from_mb_ms(r, 10.0, 0.0)))
            .fold(f64::INFINITY, f64::min);
        assert!(
            (only_fp32
                .choose(&Estimates::from_mb_ms(r, 10.0, 0.0))
                .expected_s
                - best)
                .abs()
                < 1e-12
        );
    }
}

#[test]
fn policy_names_parse_and_bad_ones_are_refused() {
    let t = effnet_table();
    for name in [
        "device",
        "server",
        "static:blocks_5",
        "static:6:int8",
        "dynamic",
        "dynamic-fp16",
        "oracle",
        "oracle-int8",
    ] {
        policy::parse(name, &t, None).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(matches!(
        policy::parse("fastest", &t, None),
        Err(SchedError::UnknownPolicy(_))
    ));
    let e = policy::parse("static:blocks_6", &t, None).err().unwrap();
    assert!(matches!(e, SchedError::NotACandidate { .. }));
    assert!(e.to_string().contains("blocks_5 (6)"), "{e}");
    assert!(policy::parse("static:blocks_5:bf16", &t, None).is_err());
}

#[test]
fn old_and_misspelled_policy_names_are_refused_with_the_new_form() {
    let t = effnet_table();
    // `static:K` once meant "the device runs blocks 0..K" in `edgecut run`.
    let e = policy::parse("static:6", &t, None).err().unwrap();
    assert!(matches!(e, SchedError::OldSpelling { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("static:blocks_5") && msg.contains("static:6:fp32") && msg.contains("AFTER"),
        "{msg}"
    );
    for (name, new_form) in [
        ("device-only", "`device`"),
        ("server-only", "`server`"),
        ("static:blocks_5/fp16", "static:blocks_5:fp16"),
        ("static", "static:<block name or index>"),
    ] {
        let e = policy::parse(name, &t, None).err().unwrap().to_string();
        assert!(e.contains(new_form), "{name}: {e}");
    }
    for name in ["dynamic-fp64", "oracle-", "dynamo"] {
        let e = policy::parse(name, &t, None).err().unwrap();
        assert!(matches!(e, SchedError::UnknownPolicy(_)), "{name}: {e}");
        assert!(
            e.to_string().contains("static:<block name or index>"),
            "{e}"
        );
    }
    let e = policy::parse_live("oracle", &t).err().unwrap();
    assert!(matches!(e, SchedError::NeedsFuture(_)), "{e}");
    assert!(e.to_string().contains("dynamic"), "{e}");
}

#[test]
fn a_choice_has_one_label_and_static_names_the_block_it_follows() {
    let t = effnet_table();
    let p = policy::parse("static:blocks_5:fp16", &t, None).unwrap();
    assert_eq!(p.name(), "static:blocks_5:fp16");
    let c = Choice::after(
        t.parse_cut("blocks_5")
            .map(|c| match c {
                Cut::After(k) => k,
                _ => unreachable!(),
            })
            .unwrap(),
        Encoding::Fp16,
    );
    assert_eq!(t.label(c), "blocks_5:fp16");
    assert_eq!(t.label(Choice::DEVICE), "device");
    assert_eq!(t.label(t.server_choice()), "server");
}

#[test]
fn a_profile_for_another_model_is_refused() {
    let m = effnet();
    let dir = root().join("models/efficientnet-b0/profiles");
    let mut p = Profile::load(dir.join("server.json"), m).unwrap();
    let fixture = Model::load(root().join("models/mnist-fixture")).unwrap();
    let e = p.check(&fixture, "server profile").unwrap_err();
    assert!(e.to_string().contains("blocks"), "{e}");
    p.hash = "0".repeat(64);
    assert!(p
        .check(m, "server profile")
        .unwrap_err()
        .to_string()
        .contains("hash"));
}

#[test]
fn online_observations_move_block_times_toward_what_was_measured() {
    let m = effnet();
    let mut p = Profile::load(
        root().join("models/efficientnet-b0/profiles/server.json"),
        m,
    )
    .unwrap();
    let before: f64 = p.block_seconds()[2..5].iter().sum();
    let ratio = p.observe(2..5, 2.0 * before, 0.5).unwrap();
    assert!((ratio - 2.0).abs() < 1e-9);
    let after: f64 = p.block_seconds()[2..5].iter().sum();
    assert!((after - 1.5 * before).abs() < 1e-9);
    assert_eq!(p.observed_runs, 1);
    assert!(p.observe(5..5, 1.0, 0.5).is_err());
}

/// On a trace stepping between a high and a low rate, Dynamic uses different cuts in the two
/// phases, is no worse than the best static policy by more than 2%, and within 10% of Oracle.
#[test]
fn dynamic_tracks_a_stepping_rate_close_to_the_oracle() {
    let t = effnet_table();
    let server_total: f64 = t.server_block_s.iter().sum();
    let device_total: f64 = t.device_block_s.iter().sum();
    let image = t.options[0].bytes as f64;
    // High: the image crosses in 1% of the server's compute time (server-only is best).
    // Low: sending the image takes 1.2x device-only time (a late, small split tensor is best).
    let high = 100.0 * image / server_total;
    let low = image / (1.2 * device_total);
    let dwell = 500.0; // long against the estimator's memory (a few requests)
    let trace = Trace::steps(&[high, low], dwell).unwrap();
    let cfg = SimConfig {
        requests: 1000,
        arrivals: Arrivals::Periodic {
            rate: 0.5 / device_total,
        },
        rtt_s: 0.02,
        workers: 1,
        load: ServerLoad::Constant(0.0),
        ..SimConfig::default()
    };
    let run = |p: &mut dyn Policy| simulate(&t, &trace, p, &cfg, &ExitSource::None);
    let dynamic = run(&mut Dynamic::new(&t));
    let oracle = run(&mut Oracle::with(&t, &Encoding::ALL, None).unwrap());
    let mut best_static = f64::INFINITY;
    for o in &t.options {
        let r = run(&mut Fixed::new(&t, o.choice).unwrap());
        best_static = best_static.min(r.mean());
    }
    // Cuts chosen in each phase (skip the first requests after each switch).
    let phase = |a: f64| ((a / dwell).floor() as usize) % 2;
    let mut seen = [
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    ];
    for (i, &a) in dynamic.arrivals.iter().enumerate() {
        if a % dwell > dwell / 4.0 {
            seen[phase(a)].insert(dynamic.options[i]);
        }
    }
    assert!(
        seen[0].is_disjoint(&seen[1]),
        "phases used {:?} and {:?}",
        seen[0],
        seen[1]
    );
    let (d, o) = (dynamic.mean(), oracle.mean());
    assert!(
        d <= best_static * 1.02,
        "dynamic {d} vs best static {best_static}"
    );
    assert!(d <= o * 1.10, "dynamic {d} vs oracle {o}");
}

fn edgecut(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgecut"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs the binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fails_with(args: &[&str], needle: &str) {
    let (ok, _, err) = edgecut(args);
    assert!(!ok, "{args:?} should fail");
    assert!(
        err.contains(needle),
        "{args:?}: stderr {err:?} lacks {needle:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn simulate_reports_every_policy_as_one_json_object() {
    let (ok, out, err) = edgecut(&[
        "simulate",
        "models/efficientnet-b0",
        "--trace",
        "steps:20,0.5@30",
        "--rate",
        "0.1",
        "--requests",
        "60",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    let p = &v["policies"];
    for name in [
        "device",
        "server",
        "static:blocks_5:fp32",
        "dynamic",
        "oracle",
    ] {
        assert!(p[name]["mean_ms"].as_f64().unwrap() > 0.0, "{name}");
        assert!(p[name]["p95_ms"].as_f64().unwrap() >= p[name]["mean_ms"].as_f64().unwrap() * 0.5);
        assert!(p[name]["cuts"].is_object());
    }
    assert_eq!(p["device"]["bytes"].as_u64(), Some(0));
}

#[test]
fn profiles_and_simulations_of_an_exit_model_use_measured_confidences() {
    let d = scratch("fixture");
    let prof = d.join("cpu.json");
    let (ok, _, err) = edgecut(&[
        "profile",
        "models/mnist-fixture",
        "--backend",
        "cpu",
        "--runs",
        "3",
        "--out",
        prof.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = edgecut(&[
        "simulate",
        "models/mnist-fixture",
        "--trace",
        "const:0.01",
        "--device-profile",
        prof.to_str().unwrap(),
        "--server-profile",
        prof.to_str().unwrap(),
        "--data",
        "models/data/mnist",
        "--samples",
        "300",
        "--exit-threshold",
        "0.1",
        "--requests",
        "50",
        "--rate",
        "100",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let acc = v["policies"]["device"]["accuracy"]
        .as_f64()
        .expect("accuracy known on real data");
    assert!((0.0..=1.0).contains(&acc));
    assert!(
        v["policies"]["device"]["exit_rate"].as_f64().unwrap() > 0.0,
        "threshold 0.1 exits"
    );
    // A profile of the fixture does not fit efficientnet.
    fails_with(
        &[
            "simulate",
            "models/efficientnet-b0",
            "--trace",
            "const:1",
            "--device-profile",
            prof.to_str().unwrap(),
        ],
        "does not match model",
    );
}

#[test]
fn bad_simulate_input_fails_with_a_clear_message() {
    let d = scratch("bad-cli");
    let bad = d.join("bad-trace");
    std::fs::write(&bad, "0.0\t1.0\n1.0\tlots\n").unwrap();
    let empty = d.join("empty-trace");
    std::fs::write(&empty, "\n").unwrap();
    let m = "models/efficientnet-b0";
    fails_with(&["simulate", m, "--trace", bad.to_str().unwrap()], "line 2");
    fails_with(
        &["simulate", m, "--trace", empty.to_str().unwrap()],
        "empty",
    );
    fails_with(&["simulate", m, "--trace", "const:0"], "positive");
    fails_with(
        &["simulate", m, "--trace", "const:1", "--rate", "0"],
        "--rate",
    );
    fails_with(
        &[
            "simulate",
            m,
            "--trace",
            "const:1",
            "--policies",
            "dynamic,fastest",
        ],
        "unknown policy 'fastest'",
    );
    fails_with(
        &[
            "simulate",
            m,
            "--trace",
            "const:1",
            "--policies",
            "static:blocks_6",
        ],
        "not a candidate",
    );
    fails_with(
        &[
            "simulate",
            m,
            "--trace",
            "const:1",
            "--server-load",
            "steps:5,x@3",
        ],
        "server load",
    );
    fails_with(
        &[
            "simulate",
            m,
            "--trace",
            "const:1",
            "--plot",
            d.join("p.png").to_str().unwrap(),
        ],
        "only .svg",
    );
    fails_with(
        &[
            "profile",
            m,
            "--slowdown",
            "0",
            "--from",
            "models/efficientnet-b0/profiles/server.json",
        ],
        "--slowdown",
    );
}
