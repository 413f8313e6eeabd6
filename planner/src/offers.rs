//! GPU offers: where GPUs can be had, at what price, how many, and how long a VM takes to boot.
//!
//! An offers file is CSV: `kind,region,price_per_hour,available,boot_s`, for example
//! `h100,aws-us-east-1,3.90,16,95`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::lines::{line_error, non_negative, read_csv};
use crate::{Error, Result};

/// The header of an offers file.
pub const OFFERS_HEADER: &str = "kind,region,price_per_hour,available,boot_s";

/// One kind of GPU in one region or cloud.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    /// GPU kind (`h100`).
    pub kind: String,
    /// Region or cloud (`aws-us-east-1`).
    pub region: String,
    /// Price of one GPU for an hour.
    pub price_per_hour: f64,
    /// Most GPUs that can be held at once.
    pub available: u64,
    /// Seconds from asking for a VM to it running (before any container starts on it).
    pub boot_s: f64,
}

impl Offer {
    /// `kind@region`.
    pub fn name(&self) -> String {
        format!("{}@{}", self.kind, self.region)
    }
}

/// The offers of a file.
pub fn read_offers(path: &Path) -> Result<Vec<Offer>> {
    let mut offers = Vec::new();
    for (line, fields) in read_csv(path, OFFERS_HEADER)? {
        let named = |name: &str, field: &String| {
            if field.is_empty() {
                Err(line_error(path, line, format!("{name} is empty")))
            } else {
                Ok(field.clone())
            }
        };
        let available = fields[3].parse::<u64>().map_err(|_| {
            line_error(
                path,
                line,
                format!(
                    "available must be a whole number of GPUs, not {:?}",
                    fields[3]
                ),
            )
        })?;
        offers.push(Offer {
            kind: named("kind", &fields[0])?,
            region: named("region", &fields[1])?,
            price_per_hour: non_negative(path, line, "price_per_hour", &fields[2])?,
            available,
            boot_s: non_negative(path, line, "boot_s", &fields[4])?,
        });
    }
    if offers.is_empty() {
        return Err(Error::Invalid(format!("{}: no offers", path.display())));
    }
    Ok(offers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_parse_and_bad_fields_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("offers.csv");
        std::fs::write(
            &file,
            "kind,region,price_per_hour,available,boot_s\n# spot\nh100,a,2.5,8,90\n",
        )
        .unwrap();
        let offers = read_offers(&file).unwrap();
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].name(), "h100@a");
        assert_eq!(offers[0].available, 8);
        for (line, says) in [
            ("h100,a,2.5,eight,90", "available"),
            ("h100,a,-1,8,90", "price_per_hour"),
            (",a,1,8,90", "kind is empty"),
            ("h100,a,1,8", "expected 5 fields"),
        ] {
            std::fs::write(&file, format!("{OFFERS_HEADER}\nh100,b,1,1,1\n{line}\n")).unwrap();
            let err = read_offers(&file).unwrap_err().to_string();
            assert!(
                err.contains("offers.csv: line 3") && err.contains(says),
                "{err}"
            );
        }
    }
}
