//! Frontend: the shop's pages. Every page is assembled from calls to the other services: the
//! calls the original's frontend makes, those that do not depend on each other's answers made
//! together (the home page's price conversions all at once, with the currencies, the catalog
//! and the cart fetched side by side).
//!
//! ```text
//! GET  /boutique/?session=S&currency=C               home page
//! GET  /boutique/product/<id>?session=S&currency=C   product page
//! GET  /boutique/cart?session=S&currency=C           view cart
//! POST /boutique/cart?session=S                      add to cart (product_id, quantity)
//! POST /boutique/setCurrency?session=S               set currency (currency_code)
//! POST /boutique/cart/checkout?session=S&currency=C  checkout (address, email, card)
//! ```
//! The session and currency travel in the query (the original keeps them in cookies).

use crate::model::*;
use spright_sdk::rpc::{try_join, Cx, Empty, HttpRequest, HttpResponse, List, Service, Str};
use spright_sdk::Error;
use std::fmt::Write;

pub const PREFIX: &str = "/boutique";

pub fn service() -> Service {
    Service::new("frontend").http(|req: HttpRequest, cx: Cx| async move {
        match page(&req, &cx).await {
            Ok(r) => Ok(r),
            Err(PageError::BadRequest(m)) => Ok(HttpResponse::new(400, "text/plain", m + "\n")),
            Err(PageError::NotFound(m)) => Ok(HttpResponse::new(404, "text/plain", m + "\n")),
            Err(PageError::Failed(e)) => Err(e),
        }
    })
}

enum PageError {
    BadRequest(String),
    NotFound(String),
    Failed(Error),
}

impl<E: Into<Error>> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError::Failed(e.into())
    }
}

struct Session {
    user: Str<16>,
    currency: Str<4>,
}

fn session(req: &HttpRequest) -> Result<Session, PageError> {
    let user = req.query_param("session").unwrap_or("anonymous");
    let currency = req.query_param("currency").unwrap_or("USD");
    Ok(Session {
        user: Str::new(user).map_err(|e| PageError::BadRequest(format!("session: {e}")))?,
        currency: Str::new(currency)
            .map_err(|e| PageError::BadRequest(format!("currency: {e}")))?,
    })
}

async fn page(req: &HttpRequest, cx: &Cx) -> Result<HttpResponse, PageError> {
    let path = req.path().strip_prefix(PREFIX).unwrap_or(req.path());
    let s = session(req)?;
    match (req.method(), path) {
        ("GET", "" | "/") => home(&s, cx).await,
        ("GET", "/cart") => view_cart(&s, cx).await,
        ("POST", "/cart") => add_to_cart(req, &s, cx).await,
        ("POST", "/setCurrency") => set_currency(req, cx).await,
        ("POST", "/cart/checkout") => checkout(req, &s, cx).await,
        ("GET", p) if p.starts_with("/product/") => product(&p["/product/".len()..], &s, cx).await,
        _ => Err(PageError::NotFound(format!(
            "no page {} {}",
            req.method(),
            req.path()
        ))),
    }
}

async fn currencies(s: &Session, cx: &Cx) -> Result<Currencies, PageError> {
    let c = cx.call::<GetSupportedCurrencies>(&Empty::default()).await?;
    if !c.currency_codes.as_slice().contains(&s.currency) {
        return Err(PageError::BadRequest(format!(
            "unsupported currency {:?}",
            s.currency.as_str()
        )));
    }
    Ok(*c)
}

fn to_currency(from: Money, s: &Session) -> ConvertRequest {
    ConvertRequest {
        from,
        to_code: s.currency,
        _pad: [0; 4],
    }
}

async fn convert(from: Money, s: &Session, cx: &Cx) -> Result<Money, PageError> {
    Ok(*cx.call::<Convert>(&to_currency(from, s)).await?)
}

/// Every price of `products` in the session's currency, converted all at once.
async fn prices_of(products: &[Product], s: &Session, cx: &Cx) -> Result<Vec<Money>, PageError> {
    let requests: Vec<ConvertRequest> = products
        .iter()
        .map(|p| to_currency(p.price_usd, s))
        .collect();
    let converted = cx.call_all::<Convert>(requests).await?;
    Ok(converted.iter().map(|m| **m).collect())
}

/// The products `ids` names, asked for all at once.
async fn products_by_id(ids: &[Str<16>], cx: &Cx) -> Result<Vec<Product>, PageError> {
    let requests: Vec<ProductId> = ids.iter().map(|&id| ProductId { id }).collect();
    let products = cx.call_all::<GetProduct>(requests).await?;
    Ok(products.iter().map(|p| **p).collect())
}

async fn cart_of(s: &Session, cx: &Cx) -> Result<Cart, PageError> {
    Ok(*cx.call::<GetCart>(&UserId { user_id: s.user }).await?)
}

async fn ads(categories: &str, cx: &Cx) -> Result<Ads, PageError> {
    let req = AdRequest {
        context_keys: categories
            .split(',')
            .filter(|c| !c.is_empty())
            .map(Str::truncated)
            .collect(),
    };
    Ok(*cx.call::<GetAds>(&req).await?)
}

async fn recommendations(s: &Session, ids: &[Str<16>], cx: &Cx) -> Result<Vec<Product>, PageError> {
    let req = RecommendationRequest {
        user_id: s.user,
        product_ids: ids.iter().copied().collect(),
    };
    let rec = cx.call::<ListRecommendations>(&req).await?;
    let ids: Vec<Str<16>> = rec.product_ids.as_slice().iter().take(4).copied().collect();
    products_by_id(&ids, cx).await
}

/// The product `id`: 404 when the catalog has none, a failure when the catalog could not be
/// asked (so an outage is not mistaken for a missing product).
async fn product_by_id(id: Str<16>, cx: &Cx) -> Result<Product, PageError> {
    match cx.call::<GetProduct>(&ProductId { id }).await {
        Ok(p) => Ok(*p),
        Err(e)
            if e.to_string()
                .contains(crate::services::productcatalog::NOT_FOUND) =>
        {
            Err(PageError::NotFound(format!("no product {:?}", id.as_str())))
        }
        Err(e) => Err(e.into()),
    }
}

async fn list_products(cx: &Cx) -> Result<ProductList, PageError> {
    Ok(*cx.call::<ListProducts>(&Empty::default()).await?)
}

async fn home(s: &Session, cx: &Cx) -> Result<HttpResponse, PageError> {
    let (currencies, products, cart) =
        try_join!(currencies(s, cx), list_products(cx), cart_of(s, cx))?;
    let products = products.products.as_slice();
    let (prices, ads) = try_join!(prices_of(products, s, cx), ads("", cx))?;
    let mut html = Html::new("Online Boutique", s, &currencies, &cart);
    html.line("<h2>Hot products</h2><ul class=\"products\">");
    for (p, price) in products.iter().zip(&prices) {
        html.product_link(p, price, s);
    }
    html.line("</ul>");
    html.ads(&ads);
    Ok(html.finish())
}

async fn product(id: &str, s: &Session, cx: &Cx) -> Result<HttpResponse, PageError> {
    let id = Str::new(id).map_err(|_| PageError::NotFound(format!("no product {id:?}")))?;
    let product = product_by_id(id, cx).await?;
    let asked = [id];
    let (currencies, cart, price, recommended, ads) = try_join!(
        currencies(s, cx),
        cart_of(s, cx),
        convert(product.price_usd, s, cx),
        recommendations(s, &asked, cx),
        ads(product.categories.as_str(), cx)
    )?;
    let mut html = Html::new(product.name.as_str(), s, &currencies, &cart);
    let _ = write!(
        html.body,
        "<h2>{}</h2><p class=\"price\">{}</p><p>{}</p><img src=\"{}\">",
        esc(product.name.as_str()),
        price,
        esc(product.description.as_str()),
        esc(product.picture.as_str())
    );
    html.recommendations(&recommended, s);
    html.ads(&ads);
    Ok(html.finish())
}

async fn view_cart(s: &Session, cx: &Cx) -> Result<HttpResponse, PageError> {
    let (currencies, cart) = try_join!(currencies(s, cx), cart_of(s, cx))?;
    let items = cart.items.as_slice();
    let ids: Vec<Str<16>> = items.iter().map(|i| i.product_id).collect();
    let shipping = async {
        let quote = cx
            .call::<GetQuote>(&ShippingRequest {
                address: Address::default(),
                items: cart.items,
            })
            .await?;
        convert(quote.cost_usd, s, cx).await
    };
    let priced = async {
        let products = products_by_id(&ids, cx).await?;
        let prices = prices_of(&products, s, cx).await?;
        Ok::<_, PageError>((products, prices))
    };
    let (recommended, shipping, (products, prices)) =
        try_join!(recommendations(s, &ids, cx), shipping, priced)?;
    let mut total = shipping;
    let mut html = Html::new("Shopping cart", s, &currencies, &cart);
    html.line("<h2>Your cart</h2><ul class=\"cart\">");
    for ((item, p), price) in items.iter().zip(&products).zip(&prices) {
        let cost = price.times(item.quantity);
        total = total.plus(&cost);
        let _ = writeln!(
            html.body,
            "<li>{} x {}: {}</li>",
            item.quantity,
            esc(p.name.as_str()),
            cost
        );
    }
    let _ = writeln!(
        html.body,
        "</ul><p>Shipping: {shipping}</p><p class=\"total\">Total: {total}</p>"
    );
    html.recommendations(&recommended, s);
    Ok(html.finish())
}

async fn add_to_cart(req: &HttpRequest, s: &Session, cx: &Cx) -> Result<HttpResponse, PageError> {
    let id = form(req, "product_id")?;
    let quantity: u32 = form(req, "quantity")?
        .parse()
        .ok()
        .filter(|q| (1..=10).contains(q))
        .ok_or_else(|| PageError::BadRequest("quantity must be 1 to 10".into()))?;
    let id = Str::new(&id).map_err(|_| PageError::NotFound(format!("no product {id:?}")))?;
    let product = product_by_id(id, cx).await?;
    cx.call::<AddItem>(&AddItemRequest {
        user_id: s.user,
        item: CartItem {
            product_id: id,
            quantity,
        },
    })
    .await?;
    let cart = cart_of(s, cx).await?;
    let currencies = currencies(s, cx).await?;
    let mut html = Html::new("Added to cart", s, &currencies, &cart);
    let _ = write!(
        html.body,
        "<p>Added {quantity} x {} to your cart.</p>",
        esc(product.name.as_str())
    );
    Ok(html.finish())
}

async fn set_currency(req: &HttpRequest, cx: &Cx) -> Result<HttpResponse, PageError> {
    let code = form(req, "currency_code")?;
    let s = Session {
        user: session(req)?.user,
        currency: Str::new(&code)
            .map_err(|e| PageError::BadRequest(format!("currency_code: {e}")))?,
    };
    let currencies = currencies(&s, cx).await?;
    let cart = cart_of(&s, cx).await?;
    let mut html = Html::new("Currency", &s, &currencies, &cart);
    let _ = write!(html.body, "<p>Prices are now shown in {}.</p>", s.currency);
    Ok(html.finish())
}

async fn checkout(req: &HttpRequest, s: &Session, cx: &Cx) -> Result<HttpResponse, PageError> {
    let field = |name: &str| form(req, name);
    let number = |name: &str| -> Result<i32, PageError> {
        field(name)?
            .parse()
            .map_err(|_| PageError::BadRequest(format!("{name} must be a number")))
    };
    let text = |name: &str| -> Result<String, PageError> { field(name) };
    let order_req = PlaceOrderRequest {
        user_id: s.user,
        user_currency: s.currency,
        address: Address {
            street_address: Str::truncated(&text("street_address")?),
            city: Str::truncated(&text("city")?),
            state: Str::truncated(&text("state")?),
            country: Str::truncated(&text("country")?),
            zip_code: number("zip_code")?,
        },
        email: Str::new(&text("email")?)
            .map_err(|e| PageError::BadRequest(format!("email: {e}")))?,
        credit_card: CreditCard {
            credit_card_number: Str::new(&text("credit_card_number")?)
                .map_err(|e| PageError::BadRequest(format!("credit_card_number: {e}")))?,
            credit_card_cvv: number("credit_card_cvv")?,
            credit_card_expiration_year: number("credit_card_expiration_year")?,
            credit_card_expiration_month: number("credit_card_expiration_month")?,
        },
    };
    let currencies = currencies(s, cx).await?;
    let order = cx.call::<PlaceOrder>(&order_req).await?;
    let (recommended, cart) = try_join!(recommendations(s, &[], cx), cart_of(s, cx))?;
    let mut total = order.shipping_cost;
    for item in order.items.as_slice() {
        total = total.plus(&item.cost);
    }
    let mut html = Html::new("Order complete", s, &currencies, &cart);
    let _ = write!(
        html.body,
        "<h2>Your order is complete!</h2><p>Order {}</p><p>Tracking {}</p><p class=\"total\">Total paid: {}</p>",
        order.order_id, order.shipping_tracking_id, total
    );
    html.recommendations(&recommended, s);
    Ok(html.finish())
}

/// A form field, percent-decoded; missing fields are the client's error.
fn form(req: &HttpRequest, name: &str) -> Result<String, PageError> {
    let raw = req
        .form_param(name)
        .ok_or_else(|| PageError::BadRequest(format!("the form has no {name}")))?;
    percent_decode(raw)
        .ok_or_else(|| PageError::BadRequest(format!("{name} is not valid percent-encoded UTF-8")))
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A page under construction: header with currency picker and cart size, then the body.
struct Html {
    body: String,
}

impl Html {
    fn new(title: &str, s: &Session, currencies: &Currencies, cart: &Cart) -> Html {
        let mut body = String::with_capacity(16 * 1024);
        let items: u64 = cart
            .items
            .as_slice()
            .iter()
            .map(|i| i.quantity as u64)
            .sum();
        let _ = write!(
            body,
            "<!DOCTYPE html>\n<html><head><title>{}</title></head><body>\n<header><form method=\"post\" action=\"{PREFIX}/setCurrency\"><select name=\"currency_code\">",
            esc(title)
        );
        for c in currencies.currency_codes.as_slice() {
            let selected = if *c == s.currency { " selected" } else { "" };
            let _ = write!(body, "<option{selected}>{c}</option>");
        }
        let _ = writeln!(
            body,
            "</select></form><a href=\"{PREFIX}/cart\">Cart ({items})</a></header>"
        );
        Html { body }
    }

    fn line(&mut self, s: &str) {
        self.body.push_str(s);
        self.body.push('\n');
    }

    fn product_link(&mut self, p: &Product, price: &Money, s: &Session) {
        let _ = writeln!(
            self.body,
            "<li><a href=\"{PREFIX}/product/{}?currency={}\">{}</a> {}</li>",
            p.id,
            s.currency,
            esc(p.name.as_str()),
            price
        );
    }

    fn recommendations(&mut self, products: &[Product], s: &Session) {
        self.line("<h3>You may also like</h3><ul class=\"recommendations\">");
        for p in products {
            let _ = writeln!(
                self.body,
                "<li><a href=\"{PREFIX}/product/{}?currency={}\">{}</a></li>",
                p.id,
                s.currency,
                esc(p.name.as_str())
            );
        }
        self.line("</ul>");
    }

    fn ads(&mut self, ads: &Ads) {
        let list: &List<Ad, 4> = &ads.ads;
        for ad in list.as_slice() {
            let _ = writeln!(
                self.body,
                "<aside class=\"ad\"><a href=\"{PREFIX}{}\">{}</a></aside>",
                esc(ad.redirect_url.as_str()),
                esc(ad.text.as_str())
            );
        }
    }

    fn finish(mut self) -> HttpResponse {
        self.line("</body></html>");
        HttpResponse::new(200, "text/html; charset=utf-8", self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_plus_escapes_and_garbage() {
        assert_eq!(percent_decode("a+b%40c").as_deref(), Some("a b@c"));
        assert_eq!(percent_decode("%E2%82%AC").as_deref(), Some("€"));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
