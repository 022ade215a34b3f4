//! Currency: the supported currencies and conversions between them through the euro.

use crate::data::RATES;
use crate::model::*;
use spright_sdk::rpc::{Arg, Cx, Empty, Service, Str};

pub fn service() -> Service {
    Service::new("currency")
        .method::<GetSupportedCurrencies, _, _>(|_: Arg<Empty>, _: Cx| async {
            Ok(Currencies {
                currency_codes: RATES.iter().map(|(c, _)| Str::truncated(c)).collect(),
            })
        })
        .method::<Convert, _, _>(|req: Arg<ConvertRequest>, _: Cx| async move {
            convert(&req.from, req.to_code.as_str()).map_err(Into::into)
        })
}

fn rate(code: &str) -> Result<f64, String> {
    RATES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, r)| *r)
        .ok_or_else(|| format!("unsupported currency {code:?}"))
}

/// Converts through the euro, keeping nanos precision (as the original does, via doubles).
pub fn convert(from: &Money, to: &str) -> Result<Money, String> {
    if !from.is_valid() {
        return Err(format!("invalid amount {from:?}"));
    }
    let amount = from.total_nanos() as f64 / 1e9;
    let euros = amount / rate(from.currency_code.as_str())?;
    let converted = euros * rate(to)?;
    let total = (converted * 1e9).round() as i128;
    Ok(Money::from_nanos(Str::truncated(to), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_through_the_euro_and_refuses_unknown_codes() {
        let usd = Money::new("USD", 11, 305_000_000);
        let eur = convert(&usd, "EUR").unwrap();
        assert_eq!((eur.units, eur.nanos), (10, 0));
        assert_eq!(eur.currency_code.as_str(), "EUR");
        let back = convert(&eur, "USD").unwrap();
        assert_eq!((back.units, back.nanos), (11, 305_000_000));
        assert!(convert(&usd, "XXX").unwrap_err().contains("XXX"));
        assert!(convert(&Money::new("USD", 1, -5), "EUR").is_err());
    }
}
