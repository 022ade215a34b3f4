//! Email: renders the order confirmation (the original sends it; here it is counted).

use crate::model::*;
use spright_sdk::rpc::{Arg, Cx, Empty, Service};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub fn service() -> Service {
    let sent = Arc::new(AtomicU64::new(0));
    Service::new("email").method::<SendOrderConfirmation, _, _>(
        move |req: Arg<EmailRequest>, _: Cx| {
            let sent = sent.clone();
            async move {
                if !req.email.as_str().contains('@') {
                    return Err(format!("{:?} is not an email address", req.email.as_str()).into());
                }
                let text = confirmation(&req.order);
                // Rendering is the work; delivery is out of scope.
                std::hint::black_box(&text);
                sent.fetch_add(1, Ordering::Relaxed);
                Ok(Empty::default())
            }
        },
    )
}

pub fn confirmation(order: &OrderResult) -> String {
    let mut out = String::with_capacity(1024);
    let _ = writeln!(out, "Your order {} is on its way.", order.order_id);
    let _ = writeln!(out, "Tracking: {}", order.shipping_tracking_id);
    let a = &order.shipping_address;
    let _ = writeln!(
        out,
        "Ship to: {}, {} {} {}, {}",
        a.street_address, a.city, a.state, a.zip_code, a.country
    );
    for item in order.items.as_slice() {
        let _ = writeln!(
            out,
            "  {} x {}: {}",
            item.item.quantity, item.item.product_id, item.cost
        );
    }
    let _ = writeln!(out, "Shipping: {}", order.shipping_cost);
    out
}
