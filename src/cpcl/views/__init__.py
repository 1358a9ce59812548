"""What a person looks at: results tables and curves (``report``), ranking sheets (``rankings``), the cluster
sheets of a run's pseudo labels (``clusters``), and the drawing they share (``figures``)."""
