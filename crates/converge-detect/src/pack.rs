//! Packs of detectors, and the shipped pack (`pack/detectors.toml`, compiled into the
//! binary so a deployment cannot run with a pack other than the one it was tested with).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{PackError, SpecError};
use crate::spec::{DetectorSpec, Significance};

/// The shipped pack's source text.
pub const SHIPPED_PACK_TOML: &str = include_str!("../pack/detectors.toml");

/// A validated list of detectors with unique ids, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Pack {
    detectors: Vec<DetectorSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PackFile {
    #[serde(default)]
    detector: Vec<DetectorSpec>,
}

impl Pack {
    /// Loads and validates the shipped pack; call once at start.
    pub fn shipped() -> Result<Pack, PackError> {
        Pack::from_toml("pack/detectors.toml", SHIPPED_PACK_TOML)
    }

    /// A TOML pack: `[[detector]]` tables. `source_name` names it in errors.
    pub fn from_toml(source_name: &str, text: &str) -> Result<Pack, PackError> {
        let file: PackFile =
            toml::from_str(text).map_err(|error| PackError::Toml { source_name: source_name.to_string(), error })?;
        Pack::from_specs(source_name, file.detector)
    }

    /// A JSON pack: an array of detector objects.
    pub fn from_json(source_name: &str, text: &str) -> Result<Pack, PackError> {
        let detectors: Vec<DetectorSpec> = serde_json::from_str(text)
            .map_err(|error| PackError::Json { source_name: source_name.to_string(), error })?;
        Pack::from_specs(source_name, detectors)
    }

    /// Validates every spec (all problems are reported, not just the first) and the
    /// uniqueness of ids.
    pub fn from_specs(source_name: &str, detectors: Vec<DetectorSpec>) -> Result<Pack, PackError> {
        if detectors.is_empty() {
            return Err(PackError::Empty { source_name: source_name.to_string() });
        }
        let errors: Vec<SpecError> = detectors.iter().filter_map(|spec| spec.validate().err()).collect();
        if !errors.is_empty() {
            return Err(PackError::Invalid { source_name: source_name.to_string(), errors });
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for spec in &detectors {
            *counts.entry(spec.id.as_str()).or_default() += 1;
        }
        if let Some((id, count)) = counts.into_iter().find(|(_, count)| *count > 1) {
            return Err(PackError::DuplicateId { source_name: source_name.to_string(), id: id.to_string(), count });
        }
        Ok(Pack { detectors })
    }

    /// The same detectors with every test switched off: each threshold decides alone,
    /// as the pack did before it tested for noise. For comparisons (`converge bench
    /// detect` measures both on the same data), never shipped.
    pub fn without_tests(&self) -> Pack {
        let detectors = self
            .detectors
            .iter()
            .map(|spec| {
                let mut spec = spec.clone();
                if spec.raw_sql.is_none() {
                    spec.significance = Some(Significance { off: true, ..Significance::default() });
                }
                spec
            })
            .collect();
        Pack { detectors }
    }

    pub fn detectors(&self) -> &[DetectorSpec] {
        &self.detectors
    }

    pub fn get(&self, id: &str) -> Option<&DetectorSpec> {
        self.detectors.iter().find(|spec| spec.id == id)
    }

    pub fn len(&self) -> usize {
        self.detectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty()
    }
}
