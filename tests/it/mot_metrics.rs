//! MOT metrics agree with py-motmetrics 1.4.0 (values in the assets README) on TUD-Campus.

use vigil::regress::mot::{evaluate, load};

use super::common::asset;

#[test]
fn tud_campus_metrics_equal_py_motmetrics() {
    let gt = load(&asset("mot/TUD-Campus/gt.txt")).unwrap();
    let pred = load(&asset("mot/TUD-Campus/test.txt")).unwrap();
    let m = evaluate(&gt, &pred, 0.5);
    let close = |name: &str, got: f64, want: f64| {
        assert!((got - want).abs() <= 1e-6, "{name}: {got} vs {want}")
    };
    close("MOTA", m.mota, 0.526462);
    close("MOTP", m.motp, 0.277201);
    close("IDF1", m.idf1, 0.557659);
    close("IDP", m.idp, 0.729730);
    close("IDR", m.idr, 0.451253);
    close("recall", m.recall, 0.582173);
    close("precision", m.precision, 0.941441);
    assert_eq!(
        (
            m.num_false_positives,
            m.num_misses,
            m.num_switches,
            m.mostly_tracked,
            m.mostly_lost,
            m.num_fragmentations
        ),
        (13, 150, 7, 1, 1, 7)
    );
    assert_eq!((m.idtp, m.partially_tracked), (162, 6));
}

/// Scoring the truth against itself is perfect; dropping one identity costs exactly its boxes.
#[test]
fn truth_against_itself_is_perfect() {
    let gt = load(&asset("mot/TUD-Campus/gt.txt")).unwrap();
    let m = evaluate(&gt, &gt, 0.5);
    assert_eq!((m.mota, m.idf1, m.motp), (1.0, 1.0, 0.0));
    let without_1: Vec<_> = gt.iter().filter(|r| r.id != 1).cloned().collect();
    let m = evaluate(&gt, &without_1, 0.5);
    let n1 = gt.iter().filter(|r| r.id == 1).count() as u64;
    assert_eq!(
        (m.num_misses, m.num_switches, m.num_false_positives),
        (n1, 0, 0)
    );
}

/// `vigil track-eval` prints the same numbers.
#[test]
fn track_eval_cli_prints_metrics() {
    let out = super::common::vigil()
        .args(["track-eval", "--gt"])
        .arg(asset("mot/TUD-Campus/gt.txt"))
        .arg("--pred")
        .arg(asset("mot/TUD-Campus/test.txt"))
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        s.contains("MOTA        0.526462") && s.contains("IDF1        0.557659"),
        "{s}"
    );
}
