/// The built-in configuration used when `switchboard run` gets no file. The same text is
/// shipped as `configs/default.yaml` (a test keeps them identical).
public enum DefaultConfiguration {
    /// Name shown in diagnostics and logs.
    public static let fileName = "<built-in default>"

    /// The YAML text.
    public static let yaml = """
        # Switchboard demo configuration: runs with no other service.
        #
        # - a timer publishes the gateway's own stats every 2 s on topic `metrics`
        # - POST /api/publish turns JSON bodies into events (key: SWITCHBOARD_PUBLISH_KEY,
        #   or a demo key printed at start-up when that variable is unset)
        # - WebSocket clients connect to /ws; every client starts subscribed to `metrics`
        listener:
          host: 0.0.0.0
          port: 8080

        sources:
          - name: gateway-stats
            plugin: timer
            every: 2s
            topic: metrics
            type: metrics
            emit: stats

          - name: publish-api
            plugin: webhook
            path: /api/publish
            keys: ["${SWITCHBOARD_PUBLISH_KEY:-}"]
            demo_key: true

        endpoints:
          - path: /ws
            encoders: [json]
            topics: ["*"]
            subscribe: [metrics]
            heartbeat:
              interval: 30s
              timeout: 10s
            max_message_size: 64KiB

        """
}
