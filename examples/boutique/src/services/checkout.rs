//! Checkout: prices the cart in the user's currency, charges, ships, empties the cart and
//! sends the confirmation, as the original's PlaceOrder.

use crate::model::*;
use spright_sdk::rpc::{Arg, Cx, List, Service, Str};

pub fn service() -> Service {
    Service::new("checkout").method::<PlaceOrder, _, _>(
        |req: Arg<PlaceOrderRequest>, cx: Cx| async move { place_order(&req, &cx).await },
    )
}

async fn place_order(req: &PlaceOrderRequest, cx: &Cx) -> Result<OrderResult, spright_sdk::Error> {
    let user = UserId {
        user_id: req.user_id,
    };
    let cart = cx.call::<GetCart>(&user).await?;
    if cart.items.is_empty() {
        return Err(format!("the cart of {} is empty", req.user_id).into());
    }
    let convert = |from: Money| ConvertRequest {
        from,
        to_code: req.user_currency,
        _pad: [0; 4],
    };
    let mut items: List<OrderItem, MAX_CART_ITEMS> = List::new();
    let mut total = Money::from_nanos(req.user_currency, 0);
    for item in cart.items.as_slice() {
        let product = cx
            .call::<GetProduct>(&ProductId {
                id: item.product_id,
            })
            .await?;
        let price = cx.call::<Convert>(&convert(product.price_usd)).await?;
        let cost = price.times(item.quantity);
        total = total.plus(&cost);
        let _ = items.push(OrderItem {
            cost,
            item: *item,
            _pad: [0; 4],
        });
    }
    let shipping = ShippingRequest {
        address: req.address,
        items: cart.items,
    };
    let quote = cx.call::<GetQuote>(&shipping).await?;
    let shipping_cost = *cx.call::<Convert>(&convert(quote.cost_usd)).await?;
    total = total.plus(&shipping_cost);
    cx.call::<Charge>(&ChargeRequest {
        amount: total,
        credit_card: req.credit_card,
    })
    .await?;
    let tracking = cx.call::<ShipOrder>(&shipping).await?;
    cx.call::<EmptyCart>(&user).await?;
    let order = OrderResult {
        shipping_cost,
        order_id: Str::truncated(&format!(
            "{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        )),
        shipping_tracking_id: tracking.tracking_id,
        items,
        shipping_address: req.address,
        _pad: [0; 4],
    };
    // The original only logs a failed confirmation: the order stands.
    let _ = cx
        .call::<SendOrderConfirmation>(&EmailRequest {
            email: req.email,
            order,
        })
        .await;
    Ok(order)
}
