// The BnCluster.Core namespaces every benchmark here draws on.
global using BnCluster.Core.Kernels;
global using BnCluster.Core.Layers;
global using BnCluster.Core.Model;
global using BnCluster.Core.Optimizers;
global using BnCluster.Core.Training;
