//! The benchmark's output: a table for people, JSON for machines.

use serde_json::{Value, json};

/// Whether a figure met its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Met its target.
    Pass,
    /// Missed its target.
    Fail,
    /// Has no target of its own (context for another figure).
    Info,
    /// Not measured in this run.
    Skipped,
}

impl Verdict {
    /// `pass` if `ok`, else `fail`.
    pub fn of(ok: bool) -> Verdict {
        if ok { Verdict::Pass } else { Verdict::Fail }
    }

    fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Info => "-",
            Verdict::Skipped => "skipped",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Figure {
    /// A stable identifier (JSON key).
    pub id: &'static str,
    /// What was measured.
    pub name: String,
    /// The value, in `unit` (NaN if not measured).
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
    /// The value as shown in the table.
    pub shown: String,
    /// The target as shown in the table.
    pub target: String,
    /// Whether it met the target.
    pub verdict: Verdict,
    /// How it was obtained, what else was seen.
    pub detail: String,
}

impl Figure {
    /// A figure with a value.
    pub fn new(id: &'static str, name: impl Into<String>, value: f64, unit: &'static str) -> Self {
        let shown = if value.is_nan() {
            "n/a".to_owned()
        } else if unit == "%" {
            format!("{}%", fmt_num(value))
        } else if unit == "x" {
            format!("{value:.2}x")
        } else {
            format!("{} {unit}", fmt_num(value))
        };
        Figure {
            id,
            name: name.into(),
            value,
            unit,
            shown,
            target: "-".into(),
            verdict: Verdict::Info,
            detail: String::new(),
        }
    }

    /// A figure that was not measured.
    pub fn skipped(id: &'static str, name: impl Into<String>, target: &str) -> Self {
        Figure {
            target: target.into(),
            verdict: Verdict::Skipped,
            shown: "-".into(),
            ..Figure::new(id, name, f64::NAN, "")
        }
    }

    /// Sets the target and verdict.
    pub fn target(mut self, target: &str, ok: bool) -> Self {
        self.target = target.into();
        self.verdict = if self.value.is_nan() {
            Verdict::Fail
        } else {
            Verdict::of(ok)
        };
        self
    }

    /// Sets the detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// Three significant digits or so, never scientific.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The figures as a Markdown table.
pub fn table(figures: &[Figure]) -> String {
    let header = ["figure", "result", "target", "verdict", "detail"];
    let rows: Vec<[String; 5]> = figures
        .iter()
        .map(|f| {
            [
                f.name.clone(),
                f.shown.clone(),
                f.target.clone(),
                f.verdict.as_str().to_owned(),
                f.detail.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(header);
    out.push_str(&format!(
        "|{}|\n",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    ));
    for row in &rows {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
    }
    out
}

/// The figures as JSON.
pub fn json(figures: &[Figure], machine: Value, config: Value) -> Value {
    let figures: Vec<Value> = figures
        .iter()
        .map(|f| {
            json!({
                "id": f.id,
                "figure": f.name,
                "value": if f.value.is_nan() { Value::Null } else { json!(f.value) },
                "unit": f.unit,
                "target": f.target,
                "verdict": match f.verdict {
                    Verdict::Pass => "pass",
                    Verdict::Fail => "fail",
                    Verdict::Info => "info",
                    Verdict::Skipped => "skipped",
                },
                "detail": f.detail,
            })
        })
        .collect();
    json!({ "machine": machine, "config": config, "figures": figures })
}
