//! RTSP restream: the annotated video of a source served by an in-process RTSP server
//! (gst-rtsp-server), at `rtsp://BIND:PORT/PATH`. Outputs on the same address and port share one
//! server, each at its own mount path; the server runs on its own GLib main loop thread for the life
//! of the process. Listening is on 127.0.0.1 unless the pipeline file says otherwise.
//!
//! Each mount is a shared media: `appsrc → videoconvert → I420 → x264enc (zerolatency) →
//! rtph264pay`. The media is built when the first client connects; frames are pushed only while a
//! client is watching, so an unwatched restream costs nothing but the overlay.
//!
//! RTP/RTCP over UDP go out of sockets bound to the same address as the RTSP listener (an address
//! pool of [`UDP_PORTS`] per server), so a localhost restream opens nothing on other interfaces.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;
use gstreamer_video as gst_video;

use serde::Deserialize;

use super::mp4::DEFAULT_BITRATE_KBPS;
use super::{Output, OutputContext, OutputError, Resolve};
use crate::flow::lock;
use crate::frame::Frame;

/// `kind: rtsp`: RTSP restream of the annotated video, served by vigil's own RTSP server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtspSpec {
    /// Address to listen on. Default `127.0.0.1` (this machine only); `0.0.0.0` serves every
    /// interface.
    #[serde(default)]
    pub bind: Option<String>,
    /// TCP port; outputs on the same port share one server. Default 8554.
    #[serde(default)]
    pub port: Option<u16>,
    /// Mount path; may use `{pipeline}` and `{source}`. Default `/{pipeline}/{source}`.
    #[serde(default)]
    pub path: Option<String>,
    /// Draw the detections on the video. Default true.
    #[serde(default = "super::default_true")]
    pub overlay: bool,
    /// Target bitrate in kbit/s. Default 2048.
    #[serde(default)]
    pub bitrate_kbps: Option<u32>,
}

impl Output for RtspWriter {
    type Spec = RtspSpec;
    type Settings = RtspSettings;

    fn resolve(spec: &RtspSpec, cx: &mut Resolve) -> Option<RtspSettings> {
        let bind = spec.bind.clone().unwrap_or_else(|| "127.0.0.1".into());
        if bind.parse::<std::net::IpAddr>().is_err() {
            cx.problem(format!(
                "rtsp bind `{bind}` is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"
            ));
        }
        let port = spec.port.unwrap_or(8554);
        if port == 0 {
            cx.problem("rtsp port must not be 0".into());
        }
        let path = cx.expand(spec.path.as_deref().unwrap_or("/{pipeline}/{source}"))?;
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let settings = RtspSettings {
            bind,
            port,
            path,
            overlay: spec.overlay,
            bitrate_kbps: spec.bitrate_kbps.unwrap_or(DEFAULT_BITRATE_KBPS),
        };
        if cx.claim(settings.url()).is_none() {
            cx.problem(format!(
                "{} is served twice (add {{source}} to the path?)",
                settings.url()
            ));
        }
        Some(settings)
    }

    fn describe(settings: &RtspSettings) -> String {
        format!("rtsp {}", settings.url())
    }

    fn start(settings: RtspSettings, cx: &OutputContext) -> Result<Self, OutputError> {
        Self::serve(settings, cx.classes.clone())
    }

    fn write(&mut self, frame: &Frame, _cx: &OutputContext) -> Result<(), OutputError> {
        self.push(frame)
    }

    /// Stop serving this mount (its clients are disconnected, by `Drop`); the last mount of a
    /// server stops it.
    fn finish(self, _deadline: Option<std::time::Instant>) -> Result<u64, OutputError> {
        Ok(self.frames)
    }
}

/// Settings of one RTSP output, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct RtspSettings {
    pub bind: String,
    pub port: u16,
    /// Mount path, starting with `/`.
    pub path: String,
    pub overlay: bool,
    pub bitrate_kbps: u32,
}

impl RtspSettings {
    pub fn url(&self) -> String {
        format!("rtsp://{}:{}{}", self.bind, self.port, self.path)
    }
}

/// UDP ports RTP/RTCP sessions take (two each, RTP even) on the server's bind address. A port
/// another program holds is skipped; 10 000 ports are 5 000 concurrent UDP clients.
pub const UDP_PORTS: (u16, u16) = (50_000, 59_999);

/// One RTSP server (per address and port) and its main loop.
struct Server {
    server: rtsp::RTSPServer,
    /// Where its media bind their UDP sockets: the server's address, [`UDP_PORTS`].
    udp_pool: rtsp::RTSPAddressPool,
    ctx: glib::MainContext,
    main_loop: glib::MainLoop,
    /// The listening socket's source in `ctx`.
    source: Mutex<Option<glib::SourceId>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Server {
    /// Close the listening socket, drop every client and end the main loop.
    fn shut_down(&self) {
        self.server
            .client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
        if let Some(src) = lock(&self.source)
            .take()
            .and_then(|id| self.ctx.find_source_by_id(&id))
        {
            src.destroy();
        }
        // Quit from inside the loop's own context: a plain `quit()` that lands before the thread
        // has entered `run()` is forgotten, and the join would wait for ever.
        let ml = self.main_loop.clone();
        self.ctx.invoke(move || ml.quit());
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

/// Servers by `(address, port)`, with the number of outputs mounted on each.
type Servers = HashMap<(String, u16), (Arc<Server>, usize)>;

static SERVERS: LazyLock<Mutex<Servers>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The server on `bind:port`, started if no output uses it yet. Pair with [`release`].
fn server_for(bind: &str, port: u16) -> Result<Arc<Server>, String> {
    let mut servers = lock(&SERVERS);
    if let Some((s, users)) = servers.get_mut(&(bind.to_string(), port)) {
        *users += 1;
        return Ok(s.clone());
    }
    let udp_pool = rtsp::RTSPAddressPool::new();
    // ttl 0: unicast addresses (the only ones the pool then hands out)
    udp_pool
        .add_range(bind, bind, UDP_PORTS.0, UDP_PORTS.1, 0)
        .map_err(|e| format!("UDP ports on {bind}: {e}"))?;
    let server = rtsp::RTSPServer::new();
    server.set_address(bind);
    server.set_service(&port.to_string());
    let ctx = glib::MainContext::new();
    let source = server
        .attach(Some(&ctx))
        .map_err(|e| format!("cannot listen on {bind}:{port}: {e}"))?;
    let main_loop = glib::MainLoop::new(Some(&ctx), false);
    let (ml, loop_ctx) = (main_loop.clone(), ctx.clone());
    let thread = std::thread::Builder::new()
        .name(format!("rtsp-{port}"))
        .spawn(move || {
            if let Err(e) = loop_ctx.with_thread_default(|| ml.run()) {
                tracing::error!("RTSP main loop: {e}");
            }
        })
        .map_err(|e| format!("cannot start the RTSP server thread: {e}"))?;
    tracing::info!(address = %format!("{bind}:{port}"), "RTSP server listening");
    let s = Arc::new(Server {
        server,
        udp_pool,
        ctx,
        main_loop,
        source: Mutex::new(Some(source)),
        thread: Mutex::new(Some(thread)),
    });
    servers.insert((bind.to_string(), port), (s.clone(), 1));
    Ok(s)
}

/// An output is done with `bind:port`; the last one out stops the server (a reloaded pipeline that
/// moved to another port does not leave its old port bound).
fn release(bind: &str, port: u16) {
    let key = (bind.to_string(), port);
    let last = {
        let mut servers = lock(&SERVERS);
        match servers.get_mut(&key) {
            Some((_, users)) if *users > 1 => {
                *users -= 1;
                None
            }
            Some(_) => servers.remove(&key).map(|(s, _)| s),
            None => None,
        }
    };
    if let Some(s) = last {
        s.shut_down();
        tracing::info!(address = %format!("{bind}:{port}"), "RTSP server stopped");
    }
}

/// The appsrcs of the media being watched now, and the caps they should have.
#[derive(Default)]
struct Watchers {
    srcs: Vec<gst_app::AppSrc>,
    caps: Option<gst::Caps>,
}

pub struct RtspWriter {
    settings: RtspSettings,
    server: Arc<Server>,
    watchers: Arc<Mutex<Watchers>>,
    classes: Vec<String>,
    pub frames: u64,
}

impl RtspWriter {
    /// Mount the restream on its server (started on first use) and serve it.
    pub fn serve(settings: RtspSettings, classes: Vec<String>) -> Result<Self, OutputError> {
        let err = |m: String| OutputError::Encode {
            path: settings.url(),
            message: m,
        };
        let server = server_for(&settings.bind, settings.port).map_err(err)?;
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(&format!(
            "( appsrc name=src is-live=true format=time do-timestamp=true \
             ! queue leaky=downstream max-size-buffers=4 ! videoconvert ! video/x-raw,format=I420 \
             ! x264enc tune=zerolatency speed-preset=ultrafast bitrate={} key-int-max=30 \
             ! video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )",
            settings.bitrate_kbps
        ));
        factory.set_shared(true);
        factory.set_address_pool(Some(&server.udp_pool));
        let watchers: Arc<Mutex<Watchers>> = Arc::default();
        let w = watchers.clone();
        factory.connect_media_configure(move |_, media| {
            let Some(bin) = media.element().downcast_ref::<gst::Bin>().cloned() else {
                return;
            };
            let Some(src) = bin
                .by_name_recurse_up("src")
                .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            else {
                return;
            };
            let mut g = lock(&w);
            if let Some(c) = &g.caps {
                src.set_caps(Some(c));
            }
            g.srcs.push(src.clone());
            let w2 = w.clone();
            media.connect_unprepared(move |_| {
                lock(&w2).srcs.retain(|s| s != &src);
            });
        });
        let Some(mounts) = server.server.mount_points() else {
            release(&settings.bind, settings.port);
            return Err(err("the RTSP server has no mount points".into()));
        };
        mounts.add_factory(&settings.path, factory);
        tracing::info!(url = %settings.url(), "restreaming");
        Ok(Self {
            settings,
            server,
            watchers,
            classes,
            frames: 0,
        })
    }

    /// Push `frame` (with the overlay drawn if asked) to whoever is watching.
    pub fn push(&mut self, frame: &Frame) -> Result<(), OutputError> {
        self.frames += 1;
        let mut g = lock(&self.watchers);
        // x264 needs even sizes: odd frames are padded by one repeated column/row (overlay).
        let (w, h) = super::overlay::even_size(frame.image.width, frame.image.height);
        let caps = gst_video::VideoInfo::builder(gst_video::VideoFormat::Bgr, w, h)
            .fps(gst::Fraction::new(0, 1))
            .build()
            .ok()
            .and_then(|i| i.to_caps().ok());
        if caps != g.caps {
            g.caps = caps;
            if let Some(c) = &g.caps {
                for s in &g.srcs {
                    s.set_caps(Some(c));
                }
            }
        }
        if g.srcs.is_empty() {
            return Ok(());
        }
        let data = super::overlay::encoder_picture(frame, &self.classes, self.settings.overlay)
            .map_err(|m| OutputError::Encode {
                path: self.settings.url(),
                message: m.to_string(),
            })?
            .bgr;
        let buffer = gst::Buffer::from_mut_slice(data);
        // A watcher that went away makes push fail (flushing): it is removed by `unprepared`.
        g.srcs.retain(|s| s.push_buffer(buffer.clone()).is_ok());
        Ok(())
    }
}

impl Drop for RtspWriter {
    fn drop(&mut self) {
        if let Some(m) = self.server.server.mount_points() {
            m.remove_factory(&self.settings.path);
        }
        let srcs = std::mem::take(&mut lock(&self.watchers).srcs);
        for s in srcs {
            let _ = s.end_of_stream();
        }
        release(&self.settings.bind, self.settings.port);
    }
}
