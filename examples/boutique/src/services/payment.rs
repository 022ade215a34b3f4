//! Payment: validates the card (Luhn, accepted networks, not expired) and charges it.

use crate::model::*;
use spright_sdk::rpc::{Arg, Cx, Service, Str};

pub fn service() -> Service {
    Service::new("payment").method::<Charge, _, _>(|req: Arg<ChargeRequest>, _: Cx| async move {
        validate(&req.credit_card, 2026, 11)?;
        if !req.amount.is_valid() || req.amount.total_nanos() <= 0 {
            return Err(format!("cannot charge {}", req.amount).into());
        }
        Ok(TransactionId {
            transaction_id: Str::truncated(&format!(
                "{:08x}-{:04x}-{:04x}-{:012x}",
                fastrand::u32(..),
                fastrand::u16(..),
                fastrand::u16(..),
                fastrand::u64(..) & 0xffff_ffff_ffff
            )),
        })
    })
}

/// Checks a card as the original's payment service does: Luhn checksum, VISA or MasterCard
/// only, and an expiry date not in the past.
pub fn validate(card: &CreditCard, year: i32, month: i32) -> Result<(), String> {
    let number = card.credit_card_number.as_str();
    let digits: Vec<u32> = number
        .chars()
        .filter(|c| *c != ' ' && *c != '-')
        .map(|c| c.to_digit(10).ok_or("the card number has a non-digit"))
        .collect::<Result<_, _>>()?;
    if !(13..=19).contains(&digits.len()) || !luhn(&digits) {
        return Err("the card number is not valid".into());
    }
    let network = match digits[0] {
        4 => "visa",
        5 => "mastercard",
        _ => return Err("only VISA or MasterCard are accepted".into()),
    };
    let (y, m) = (
        card.credit_card_expiration_year,
        card.credit_card_expiration_month,
    );
    if !(1..=12).contains(&m) || (y, m) < (year, month) {
        return Err(format!("the {network} card expired ({m}/{y})"));
    }
    Ok(())
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(number: &str, year: i32, month: i32) -> CreditCard {
        CreditCard {
            credit_card_number: Str::truncated(number),
            credit_card_cvv: 672,
            credit_card_expiration_year: year,
            credit_card_expiration_month: month,
        }
    }

    #[test]
    fn accepts_valid_cards_and_names_what_is_wrong_with_others() {
        assert_eq!(
            validate(&card("4432801561520454", 2039, 1), 2026, 11),
            Ok(())
        );
        assert!(validate(&card("4432801561520455", 2039, 1), 2026, 11)
            .unwrap_err()
            .contains("not valid"));
        assert!(validate(&card("378282246310005", 2039, 1), 2026, 11)
            .unwrap_err()
            .contains("VISA"));
        assert!(validate(&card("4432801561520454", 2020, 1), 2026, 11)
            .unwrap_err()
            .contains("expired"));
        assert!(validate(&card("44328o1561520454", 2039, 1), 2026, 11).is_err());
    }
}
