//! Motion detection, the paper's IoT workload: a sensor function turns a motion reading into a
//! light command and an actuator function applies it to the room's light.
//!
//! `POST /motion` with `sensor=<id>&room=<n>&motion=<0|1>&lux=<level>` goes through the
//! sequence sensor -> actuator; the answer says what the room's light does.

use spright_sdk::rpc::{Cx, HttpRequest, HttpResponse, Service};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Below this ambient light level, motion turns the light on.
pub const DARK_LUX: u32 = 200;
const ROOMS: u32 = 64;

/// What the sensor asks of the actuator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    On,
    Off,
    Keep,
}

impl Command {
    fn as_str(self) -> &'static str {
        match self {
            Command::On => "on",
            Command::Off => "off",
            Command::Keep => "keep",
        }
    }

    fn parse(s: &str) -> Option<Command> {
        match s {
            "on" => Some(Command::On),
            "off" => Some(Command::Off),
            "keep" => Some(Command::Keep),
            _ => None,
        }
    }
}

/// A validated reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub sensor: u32,
    pub room: u32,
    pub motion: bool,
    pub lux: u32,
}

fn field<'a>(form: &'a str, name: &str) -> Result<&'a str, String> {
    form.split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .ok_or_else(|| format!("the reading has no {name}"))
}

fn number(form: &str, name: &str, max: u32) -> Result<u32, String> {
    field(form, name)?
        .parse()
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| format!("{name} must be a number from 0 to {max}"))
}

pub fn parse_reading(body: &[u8]) -> Result<Reading, String> {
    let form = std::str::from_utf8(body).map_err(|_| "the reading is not UTF-8".to_owned())?;
    Ok(Reading {
        sensor: number(form, "sensor", 1 << 20)?,
        room: number(form, "room", ROOMS - 1)?,
        motion: number(form, "motion", 1)? == 1,
        lux: number(form, "lux", 100_000)?,
    })
}

/// Motion in the dark turns the light on; no motion turns it off; motion in daylight keeps it.
pub fn decide(r: &Reading) -> Command {
    match (r.motion, r.lux < DARK_LUX) {
        (true, true) => Command::On,
        (true, false) => Command::Keep,
        (false, _) => Command::Off,
    }
}

/// The functions, as the chain file names them.
pub const NAMES: &[&str] = &["sensor", "actuator"];

/// The function called `name`.
pub fn by_name(name: &str) -> Option<Service> {
    Some(match name {
        "sensor" => sensor(),
        "actuator" => actuator(),
        _ => return None,
    })
}

/// The sensor: validates a reading and emits a command for the actuator.
pub fn sensor() -> Service {
    Service::new("sensor").http(|req: HttpRequest, _: Cx| async move {
        Ok(match parse_reading(req.body()) {
            Ok(r) => HttpResponse::new(
                200,
                "application/x-www-form-urlencoded",
                format!(
                    "room={}&command={}&sensor={}",
                    r.room,
                    decide(&r).as_str(),
                    r.sensor
                ),
            ),
            Err(e) => HttpResponse::new(400, "text/plain", e + "\n"),
        })
    })
}

/// The actuator: keeps every room's light and applies commands.
pub fn actuator() -> Service {
    let lights: Arc<Mutex<HashMap<u32, bool>>> = Arc::default();
    Service::new("actuator").http(move |req: HttpRequest, _: Cx| {
        let answer = apply(&lights, req.body());
        async move { Ok(answer) }
    })
}

fn apply(lights: &Mutex<HashMap<u32, bool>>, body: &[u8]) -> HttpResponse {
    let parsed = std::str::from_utf8(body)
        .map_err(|_| "not UTF-8".to_owned())
        .and_then(|form| {
            let room = number(form, "room", ROOMS - 1)?;
            let command = Command::parse(field(form, "command")?).ok_or("unknown command")?;
            Ok((room, command))
        });
    let (room, command) = match parsed {
        Ok(p) => p,
        Err(e) => return HttpResponse::new(400, "text/plain", format!("bad command: {e}\n")),
    };
    let mut lights = lights.lock().unwrap();
    let light = lights.entry(room).or_insert(false);
    let was = *light;
    match command {
        Command::On => *light = true,
        Command::Off => *light = false,
        Command::Keep => {}
    }
    let state = |on: bool| if on { "on" } else { "off" };
    HttpResponse::new(
        200,
        "text/plain",
        format!(
            "room {room}: light {} (was {})\n",
            state(*light),
            state(was)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_validated_and_decided() {
        let r = parse_reading(b"sensor=3&room=2&motion=1&lux=50").unwrap();
        assert_eq!(decide(&r), Command::On);
        let r = parse_reading(b"sensor=3&room=2&motion=1&lux=900").unwrap();
        assert_eq!(decide(&r), Command::Keep);
        let r = parse_reading(b"sensor=3&room=2&motion=0&lux=50").unwrap();
        assert_eq!(decide(&r), Command::Off);
        assert!(parse_reading(b"sensor=3&room=99&motion=1&lux=5")
            .unwrap_err()
            .contains("room"));
        assert!(parse_reading(b"sensor=3&room=1&motion=1")
            .unwrap_err()
            .contains("lux"));
        assert!(parse_reading(&[0xff]).is_err());
    }

    #[test]
    fn the_actuator_keeps_each_rooms_light() {
        let lights = Mutex::new(HashMap::new());
        let body = |r: HttpResponse| String::from_utf8(r.body).unwrap();
        assert_eq!(
            body(apply(&lights, b"room=1&command=on")),
            "room 1: light on (was off)\n"
        );
        assert_eq!(
            body(apply(&lights, b"room=1&command=keep")),
            "room 1: light on (was on)\n"
        );
        assert_eq!(
            body(apply(&lights, b"room=2&command=keep")),
            "room 2: light off (was off)\n"
        );
        assert_eq!(apply(&lights, b"room=1&command=dance").status, 400);
    }
}
