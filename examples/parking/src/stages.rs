//! The parking workload's four functions, run as the sequence
//! detection -> search -> index -> charging on `POST /parking` with a camera frame (PGM):
//!
//! - **detection** reads the licence plate off the frame (real image work, see [`vision`]);
//! - **search** looks the plate up among registered vehicles;
//! - **index** records the sighting: the first is an entry, the next an exit;
//! - **charging** prices a stay on exit and answers with what happened.
//!
//! Stages pass small `application/x-www-form-urlencoded` records to each other.
//!
//! [`vision`]: crate::vision

use crate::vision::{pgm, read_plate, synth};
use spright_sdk::rpc::{Cx, HttpRequest, HttpResponse, Service};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Seeds `0..REGISTERED` give the plates of registered vehicles (see [`synth::random_plate`]).
pub const REGISTERED: u64 = 500;
/// Price of each started quarter hour, in cents.
pub const CENTS_PER_QUARTER: u64 = 50;
/// The demo's clock runs fast: a second of parking counts as a minute.
const MINUTES_PER_SECOND: f64 = 1.0;

const FORM: &str = "application/x-www-form-urlencoded";

fn bad(message: String) -> HttpResponse {
    HttpResponse::new(400, "text/plain", message + "\n")
}

fn field<'a>(form: &'a str, name: &str) -> Result<&'a str, String> {
    form.split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .ok_or_else(|| format!("the record has no {name}"))
}

fn record(req: &HttpRequest) -> Result<&str, String> {
    std::str::from_utf8(req.body()).map_err(|_| "the record is not UTF-8".to_owned())
}

/// The functions, as the chain file names them.
pub const NAMES: &[&str] = &["detection", "search", "index", "charging"];

/// The function called `name`.
pub fn by_name(name: &str) -> Option<Service> {
    Some(match name {
        "detection" => detection(),
        "search" => search(),
        "index" => index(),
        "charging" => charging(),
        _ => return None,
    })
}

/// Plate detection: decodes the frame and reads the plate.
pub fn detection() -> Service {
    Service::new("detection").http(|req: HttpRequest, _: Cx| async move {
        let image = match pgm::decode(req.body()) {
            Ok(i) => i,
            Err(e) => return Ok(bad(format!("the frame is not a PGM image: {e}"))),
        };
        Ok(match read_plate(&image) {
            Ok(d) => HttpResponse::new(
                200,
                FORM,
                format!("plate={}&confidence={:.2}", d.text, d.confidence),
            ),
            Err(e) => HttpResponse::new(422, "text/plain", format!("no plate read: {e}\n")),
        })
    })
}

/// Plate search: which account, if any, the plate belongs to.
pub fn search() -> Service {
    let registry: Arc<HashMap<String, u64>> = Arc::new(
        (0..REGISTERED)
            .map(|seed| (synth::random_plate(seed), 1000 + seed))
            .collect(),
    );
    Service::new("search").http(move |req: HttpRequest, _: Cx| {
        let answer = record(&req).and_then(|r| field(r, "plate")).map(|plate| {
            let account = registry
                .get(plate)
                .map(|a| a.to_string())
                .unwrap_or_else(|| "visitor".into());
            HttpResponse::new(200, FORM, format!("plate={plate}&account={account}"))
        });
        async move { Ok(answer.unwrap_or_else(bad)) }
    })
}

/// Plate index: vehicles currently parked, by plate.
pub fn index() -> Service {
    let parked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    Service::new("index").http(move |req: HttpRequest, _: Cx| {
        let answer = record(&req).and_then(|r| {
            let plate = field(r, "plate")?;
            let account = field(r, "account")?;
            let mut parked = parked.lock().unwrap();
            Ok(match parked.remove(plate) {
                Some(since) => {
                    let minutes = since.elapsed().as_secs_f64() * MINUTES_PER_SECOND;
                    format!("plate={plate}&account={account}&event=exit&minutes={minutes:.1}")
                }
                None => {
                    parked.insert(plate.to_owned(), Instant::now());
                    format!("plate={plate}&account={account}&event=entry")
                }
            })
        });
        async move {
            Ok(answer
                .map(|r| HttpResponse::new(200, FORM, r))
                .unwrap_or_else(bad))
        }
    })
}

/// The price of a stay: every started quarter hour, visitors paying half again as much.
pub fn price_cents(minutes: f64, visitor: bool) -> u64 {
    let quarters = ((minutes / 15.0).ceil() as u64).max(1);
    let cents = quarters * CENTS_PER_QUARTER;
    if visitor {
        cents * 3 / 2
    } else {
        cents
    }
}

/// Charging: prices exits and says what happened.
pub fn charging() -> Service {
    Service::new("charging").http(|req: HttpRequest, _: Cx| async move {
        let answer = record(&req).and_then(|r| {
            let plate = field(r, "plate")?;
            let account = field(r, "account")?;
            Ok(match field(r, "event")? {
                "entry" => format!("plate {plate} entered (account {account})\n"),
                "exit" => {
                    let minutes: f64 = field(r, "minutes")?
                        .parse()
                        .ok()
                        .filter(|m: &f64| m.is_finite() && *m >= 0.0)
                        .ok_or("minutes must be a number of minutes")?;
                    let cents = price_cents(minutes, account == "visitor");
                    let payer = if account == "visitor" {
                        "pay at the gate".to_owned()
                    } else {
                        format!("charged to account {account}")
                    };
                    format!(
                        "plate {plate} left after {minutes:.1} min: {}.{:02} EUR {payer}\n",
                        cents / 100,
                        cents % 100
                    )
                }
                other => return Err(format!("unknown event {other:?}")),
            })
        });
        Ok(answer
            .map(|r| HttpResponse::new(200, "text/plain", r))
            .unwrap_or_else(bad))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_are_priced_by_started_quarter_hour() {
        assert_eq!(price_cents(0.0, false), 50);
        assert_eq!(price_cents(15.0, false), 50);
        assert_eq!(price_cents(15.1, false), 100);
        assert_eq!(price_cents(61.0, true), 375);
    }

    #[test]
    fn fields_are_found_by_exact_name() {
        assert_eq!(field("plate=AB1&account=7", "account"), Ok("7"));
        assert!(field("plates=AB1", "plate").is_err());
    }
}
