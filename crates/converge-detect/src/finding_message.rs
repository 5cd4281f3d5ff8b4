//! A finding's words: the spec's message template filled from its result row
//! ([`FindingRow`], core's).

use converge_core::FindingRow;

use crate::message_template::{format_number, render};
use crate::spec::{DetectorSpec, Measure};

/// Renders the spec's message for one row, followed by the evidence of a tested finding
/// (expected value, z, p- and q-value, the volume both windows rest on), so the message
/// alone lets a person judge it. The template was checked when the spec was validated;
/// an unchecked, malformed template renders as its literal text.
pub fn render_message(spec: &DetectorSpec, row: &FindingRow) -> String {
    let message = render(&spec.message, |name| placeholder_value(spec, row, name));
    match evidence_sentence(spec, row) {
        Some(evidence) => format!("{message}. {evidence}"),
        None => message,
    }
}

/// `Expected 4.1 (baseline 4.3 on 2,812 sessions); z = -3.9, p = 0.00005, q = 0.0008
/// among the tested pages.` — only for a tested finding.
fn evidence_sentence(spec: &DetectorSpec, row: &FindingRow) -> Option<String> {
    let (statistic, p_value, q_value) = (row.statistic?, row.p_value?, row.q_value?);
    let volume_metric = match (&spec.min_volume, &spec.measure) {
        (Some(gate), _) => gate.metric.as_str(),
        (None, Some(Measure::Ratio { denominator, .. })) => denominator.as_str(),
        (None, Some(Measure::Sum { metric, .. })) => metric.as_str(),
        (None, None) => "volume",
    };
    let compared = match (row.baseline_value, row.reference_value) {
        (Some(baseline), _) => format!("expected {}", format_number(baseline)),
        (None, Some(reference)) => format!("reference {}", format_number(reference)),
        (None, None) => "nothing to compare".into(),
    };
    let volumes = match (row.volume, row.baseline_volume) {
        (Some(recent), Some(baseline)) => {
            format!("{} {volume_metric} recent, {} in the baseline", format_number(recent), format_number(baseline))
        }
        (Some(recent), None) => format!("{} {volume_metric}", format_number(recent)),
        _ => "no volume".into(),
    };
    Some(format!(
        "Evidence: observed {}, {compared} ({volumes}); z = {:.2}, one-sided p = {}, q = {} after testing every {} that passed the volume gate",
        format_optional(row.recent_value),
        statistic,
        format_probability(p_value),
        format_probability(q_value),
        spec.entity_type,
    ))
}

/// Probabilities to two significant digits, small ones in scientific notation.
fn format_probability(p: f64) -> String {
    if p >= 0.001 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}

fn placeholder_value(spec: &DetectorSpec, row: &FindingRow, name: &str) -> String {
    let windows = spec.windows.as_ref();
    match name {
        "tenant" => row.tenant.clone(),
        "entity_type" => row.entity_type.clone(),
        "entity_id" => row.entity_id.clone(),
        "title" => spec.title.clone(),
        "recent" => format_optional(row.recent_value),
        "baseline" => format_optional(row.baseline_value),
        "reference" => format_optional(row.reference_value),
        "volume" => format_optional(row.volume),
        "change_pct" => row.change_pct().map_or_else(|| "n/a".to_string(), |pct| format!("{pct:+.1}%")),
        "recent_days" => windows.map_or_else(|| "n/a".to_string(), |w| w.recent_days.to_string()),
        "baseline_days" => windows.and_then(|w| w.baseline_days).map_or_else(|| "n/a".to_string(), |d| d.to_string()),
        other => format!("{{{other}}}"),
    }
}

fn format_optional(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_string(), format_number)
}
